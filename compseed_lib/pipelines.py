"""Loading diffusers text-to-image pipelines: any hub id or local folder, plus tiny ones built from configs.

Inputs: a `ModelConfig` — `pipeline` is a registered name (`PIPELINES`: tiny-sd, tiny-pixart), a
local folder holding `model_index.json`, or a hub id (with `revision`); `device`/`dtype` ('auto' or
explicit); `generator_device` (where each seed's noise is drawn, DESIGN §5b).
Outputs: `(pipe, info)` — the pipeline on its device with progress bars off, and a dict recording
what decides pixels (model, revision, class, device, dtype, generator device, sampler, latent shape).

Registered pipelines are genuine diffusers/transformers classes on tiny configs with random but
deterministic weights (seed 0). Each is built once into `$COMPSEED_CACHE/pipelines/<name>` (default
`~/.cache/compseed`), through a temp folder renamed into place so a killed build leaves nothing
half-made, and is always loaded back with `DiffusionPipeline.from_pretrained(folder)`, so the tests
exercise the same loading path as a real model. No tokenizer file is downloaded: tiny-sd's
`CLIPTokenizer` reads a byte-level vocab.json/merges.txt written here, tiny-pixart's `T5Tokenizer`
a character-level Unigram `tokenizer.json` (no sentencepiece model needed).

Usage:
    pipe, info = load_pipeline(ModelConfig(pipeline="tiny-sd"))
    latent_shape(pipe, 32, 32)   # -> (4, 8, 8)
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import re
import shutil
import string
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .config import DEVICES, DTYPES, ModelConfig

log = logging.getLogger(__name__)
BUILD_VERSION = 1  # bump when a tiny config changes, so cached folders are rebuilt
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TEXT_DIM = 32  # width of both tiny text encoders = cross-attention width


class ModelLoadError(RuntimeError):
    """A pipeline could not be found or loaded; the message names the input."""


# ------------------------------------------------------------------ tiny components
def _tiny_vae():
    """AutoencoderKL with 2 downsamples: 32 px images <-> 4x8x8 latents (vae_scale_factor 4)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32),
                         down_block_types=("DownEncoderBlock2D",) * 3,
                         up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, norm_num_groups=8,
                         sample_size=32)


def _byte_chars() -> list[str]:
    """GPT-2/CLIP's printable stand-in character for each of the 256 bytes."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs, strict=True))]


def _clip_tokenizer(max_length: int = 77):
    """A byte-level CLIPTokenizer with no merges: every byte and `byte</w>`, so any text tokenizes."""
    from transformers import CLIPTokenizer

    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": 256 + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": 512, "<|endoftext|>": 513}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=max_length)


def _t5_tokenizer(max_length: int = 120):
    """A character-level T5Tokenizer (Unigram over printable Latin-1, T5's special ids 0/1/2)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import T5Tokenizer

    chars = [c for c in string.printable + "".join(map(chr, range(161, 256))) if not c.isspace()]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [(c, -3.0) for c in chars]
    tok = Tokenizer(Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)])
    with tempfile.TemporaryDirectory() as tmp:
        tok.save(str(Path(tmp) / "tokenizer.json"))
        return T5Tokenizer.from_pretrained(tmp, extra_ids=0, model_max_length=max_length)


def build_tiny_sd():
    """StableDiffusionPipeline: CLIP text encoder, cross-attention UNet (32 px, 4x8x8 latents), DDIM."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = _clip_tokenizer()
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=tok.model_max_length, projection_dim=TEXT_DIM,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
        cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=16)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=_tiny_vae(), text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def build_tiny_pixart():
    """PixArtAlphaPipeline: T5 encoder, 2-layer PixArt transformer (32 px, 4x8x8 latents), DPM-Solver++."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    tok = _t5_tokenizer()
    text = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2,
                                   num_heads=4, relative_attention_num_buckets=8, pad_token_id=0,
                                   eos_token_id=1, decoder_start_token_id=0))
    transformer = PixArtTransformer2DModel(
        sample_size=8, num_layers=2, patch_size=2, attention_head_dim=16, num_attention_heads=2,
        caption_channels=TEXT_DIM, in_channels=4, out_channels=8, cross_attention_dim=32,
        attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6)
    return PixArtAlphaPipeline(tokenizer=tok, text_encoder=text, vae=_tiny_vae(), transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())


PIPELINES: dict[str, Callable] = {"tiny-sd": build_tiny_sd, "tiny-pixart": build_tiny_pixart}
# Trained pipelines shipped inside the repository (weights as safetensors, see their README.md).
SHIPPED: dict[str, Path] = {"miniworld": Path(__file__).resolve().parent.parent / "models" / "miniworld"}


# Counts a shipped generator saw in training (DESIGN §2: the mini world draws one to six of a kind).
TRAINED_COUNTS: dict[str, tuple[int, int]] = {"miniworld": (1, 6)}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def trained_counts(source: str) -> tuple[int, int] | None:
    """(lowest, highest) count the named generator was trained on, where the kit knows it."""
    return TRAINED_COUNTS.get(source)


def check_source(cfg: ModelConfig) -> str:
    """Check, without loading, that `cfg.pipeline` can be found: 'shipped', 'registered', 'folder' or 'hub'.

    A local folder must hold model_index.json and a folder for each component it lists; something that
    looks like a path but is no such folder, or a name that is neither registered nor a hub id, fails.
    """
    source = cfg.pipeline
    if source in SHIPPED:
        if not (SHIPPED[source] / "model_index.json").is_file():
            raise ModelLoadError(f"shipped pipeline {source!r} is missing at {SHIPPED[source]}: restore it from "
                                 f"git or train it with `compseed train-miniworld configs/train/miniworld_stage4.yaml`")
        return "shipped"
    if source in PIPELINES:
        return "registered"
    folder = Path(source).expanduser()
    if folder.is_dir():
        index = folder / "model_index.json"
        if not index.is_file():
            raise ModelLoadError(f"model.pipeline {source!r} is a folder without model_index.json: not a diffusers "
                                 f"pipeline folder (save one with pipe.save_pretrained(folder))")
        try:
            components = json.loads(index.read_text())
        except ValueError as e:
            raise ModelLoadError(f"{index} is not valid JSON: {e}") from None
        missing = [k for k, v in components.items() if not k.startswith("_") and isinstance(v, list)
                   and v[0] is not None and not (folder / k).is_dir()]
        if missing:
            raise ModelLoadError(f"pipeline folder {source!r} lacks the component folder(s) {missing} that its "
                                 f"model_index.json lists")
        return "folder"
    if source.startswith((".", "/", "~")) or not _HUB_ID.match(source):
        kind = "no such folder" if source.startswith((".", "/", "~")) or "/" in source else "unknown name"
        raise ModelLoadError(f"model.pipeline {source!r}: {kind}; use a registered name "
                             f"({', '.join([*SHIPPED, *PIPELINES])}), a local pipeline folder with model_index.json, "
                             f"or a hub id owner/name")
    _check_hub(source, cfg.revision)
    return "hub"


def check_size(cfg: ModelConfig, height: int, width: int) -> None:
    """Image size against the pipeline's own VAE factor, read from its vae/config.json without loading it
    (a hub model not in the local cache is checked when it loads)."""
    kind = check_source(cfg)
    if kind == "shipped":
        folder = SHIPPED[cfg.pipeline]
    elif kind == "registered":
        folder = registered_folder(cfg.pipeline)
    elif kind == "folder":
        folder = Path(cfg.pipeline).expanduser()
    else:
        import huggingface_hub as hub

        cached = hub.try_to_load_from_cache(cfg.pipeline, "vae/config.json", revision=cfg.revision)
        if not isinstance(cached, str):
            return
        folder = Path(cached).parent.parent
    try:
        vae = json.loads((folder / "vae" / "config.json").read_text())
        factor = 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return  # no standard VAE config: the pipeline's own check runs when it loads
    if height % factor or width % factor:
        raise ModelLoadError(f"generate.height/width {height}x{width}: {cfg.pipeline} needs multiples of {factor} "
                             f"(its VAE's scale factor)")


def _check_hub(repo_id: str, revision: str | None) -> None:
    """A hub id must be in the local cache or, online, exist on the hub (one short request)."""
    import huggingface_hub as hub

    if hub.try_to_load_from_cache(repo_id, "model_index.json", revision=revision) not in (None, hub._CACHED_NO_EXIST):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelLoadError(f"model {repo_id!r} is not in the local hub cache and HF_HUB_OFFLINE is set: download "
                             f"it first or point model.pipeline at a local folder")
    try:
        hub.HfApi().model_info(repo_id, revision=revision, timeout=10)
    except (hub.errors.RepositoryNotFoundError, hub.errors.RevisionNotFoundError) as e:
        raise ModelLoadError(f"model {repo_id!r}{f' at revision {revision!r}' if revision else ''} does not exist "
                             f"on the hub (or needs a token): {str(e).splitlines()[0][:200]}") from None
    except Exception as e:  # noqa: BLE001 (any network failure): say which model and why, once
        raise ModelLoadError(f"model {repo_id!r} is not in the local hub cache and the hub could not be reached "
                             f"({type(e).__name__}: {str(e)[:160]}): download it first or use a local "
                             f"pipeline folder") from None


# ------------------------------------------------------------------ cache
def cache_root() -> Path:
    """`$COMPSEED_CACHE/pipelines`, default `~/.cache/compseed/pipelines`."""
    root = os.environ.get("COMPSEED_CACHE") or Path.home() / ".cache" / "compseed"
    return Path(root).expanduser() / "pipelines"


def _stamp(name: str) -> dict:
    return {"name": name, "build_version": BUILD_VERSION}


def _is_current(folder: Path, name: str) -> bool:
    try:
        return json.loads((folder / "compseed_build.json").read_text()) == _stamp(name)
    except (OSError, ValueError):
        return False


def registered_folder(name: str) -> Path:
    """Folder of a registered pipeline, built (atomically, once per BUILD_VERSION) if missing."""
    if name not in PIPELINES:
        raise ModelLoadError(f"{name!r} is not a registered pipeline: use one of {sorted(PIPELINES)}")
    final = cache_root() / name
    if _is_current(final, name):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{name}.*.tmp"):  # left by a build killed over an hour ago
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=final.parent))
    try:
        log.info("building pipeline %r into %s", name, final)
        with torch.random.fork_rng(devices=[]):  # deterministic weights; the caller's RNG is left alone
            torch.manual_seed(0)
            pipe = PIPELINES[name]()
        pipe.save_pretrained(tmp)
        (tmp / "compseed_build.json").write_text(json.dumps(_stamp(name)))
        if _is_current(final, name):  # another process finished the same build meanwhile: keep theirs
            return final
        if final.exists():  # an older build: move it aside, then swap the new one in
            old = final.with_name(f".{name}.old-{os.getpid()}")
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same build first: keep theirs
            if not _is_current(final, name):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ------------------------------------------------------------------ device, dtype, shapes
def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; explicit devices must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ModelLoadError(f"unknown device {name!r}: use one of {list(DEVICES)} or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {name!r} asked for, but CUDA is not available here "
                             f"(use 'auto' or 'cpu')")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelLoadError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {name!r} asked for, but MPS is not available here")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' -> float16 on cuda, float32 elsewhere; explicit names from DTYPES."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in TORCH_DTYPES:
        raise ModelLoadError(f"unknown dtype {name!r}: use one of {list(DTYPES)}")
    if device.type == "cpu" and name == "float16":
        log.warning("float16 on CPU is slow and some ops lack fp16 kernels; bfloat16 or float32 is safer")
    return TORCH_DTYPES[name]


def denoiser(pipe):
    """The pipeline's denoising network: `unet` (SD family) or `transformer` (PixArt, SD3, Flux)."""
    net = getattr(pipe, "unet", None)
    net = getattr(pipe, "transformer", None) if net is None else net
    if net is None:
        raise ModelLoadError(f"{type(pipe).__name__} has neither a unet nor a transformer")
    return net


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    """Latent (C, h, w) of one image of `height` x `width` pixels."""
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    if height <= 0 or width <= 0 or height % factor or width % factor:
        raise ValueError(f"image size {height}x{width} must be positive multiples of {factor} "
                         f"(the VAE scale factor of {type(pipe).__name__})")
    return int(denoiser(pipe).config.in_channels), height // factor, width // factor


# ------------------------------------------------------------------ loading
def _from_pretrained(source: str, revision: str | None, dtype: torch.dtype):
    from diffusers import DiffusionPipeline
    from diffusers.utils import deprecation_utils

    # diffusers >= 0.36 renamed torch_dtype to dtype (the old name warns); older ones know only torch_dtype
    key = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    kwargs = {key: dtype} | ({"revision": revision} if revision else {})
    return DiffusionPipeline.from_pretrained(source, **kwargs)


def load_pipeline(cfg: ModelConfig) -> tuple:
    """The pipeline `cfg` names, on its device and dtype, with an info dict of what decides pixels."""
    # 1. Check inputs before any loading
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    gen_device = resolve_device(cfg.generator_device)
    if gen_device.type not in ("cpu", "cuda"):
        raise ModelLoadError(f"generator_device {cfg.generator_device!r}: use 'cpu' or 'cuda'")
    if gen_device.type == "cuda" and device.type != "cuda":
        raise ModelLoadError(f"generator_device 'cuda' needs the pipeline on cuda, not {device}")
    # 2. Resolve the source: registered name, local folder, or hub id
    source = cfg.pipeline
    if source in SHIPPED and not (SHIPPED[source] / "model_index.json").is_file():
        raise ModelLoadError(f"shipped pipeline {source!r} is missing at {SHIPPED[source]}: restore it from git "
                             f"or train it with `compseed train-miniworld configs/train/miniworld.yaml`")
    if source in SHIPPED:
        pipe = _from_pretrained(str(SHIPPED[source]), None, dtype)
    elif source in PIPELINES:
        folder = registered_folder(source)
        try:
            pipe = _from_pretrained(str(folder), None, dtype)
        except Exception as e:  # a damaged cache: say where it is
            raise ModelLoadError(f"cached pipeline {source!r} in {folder} does not load ({e}); "
                                 f"delete the folder to rebuild it") from e
    elif (Path(source).expanduser() / "model_index.json").is_file():
        try:
            pipe = _from_pretrained(str(Path(source).expanduser()), None, dtype)  # a folder has no revisions
        except Exception as e:
            raise ModelLoadError(f"local pipeline folder {source!r} does not load: {e}") from e
    else:
        try:
            pipe = _from_pretrained(source, cfg.revision, dtype)
        except Exception as e:
            reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ModelLoadError(
                f"model {source!r} is not a registered name ({', '.join([*SHIPPED, *PIPELINES])}), not a local folder "
                f"with model_index.json, and could not be loaded from the hub: {reason}") from e
    # 3. Device, memory layout, progress bars
    pipe = pipe.to(device)
    if device.type == "cuda" and getattr(pipe, "unet", None) is not None:
        pipe.unet.to(memory_format=torch.channels_last)  # attention is SDPA by default in diffusers
    pipe.set_progress_bar_config(disable=True)
    # 4. Record what decides pixels
    net = denoiser(pipe)
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    size = int(net.config.sample_size) * factor if isinstance(net.config.sample_size, int) else None
    info = dict(model=source + (f"@{cfg.revision}" if cfg.revision else ""), revision=cfg.revision,
                pipeline_class=type(pipe).__name__, device=str(device),
                dtype=str(dtype).removeprefix("torch."),
                generator_device=gen_device.type, sampler=type(pipe.scheduler).__name__,
                vae_scale_factor=factor, default_size=size,
                latent_shape=latent_shape(pipe, size, size) if size else None, call_kwargs=call_kwargs(pipe))
    log.info("loaded %s (%s) on %s/%s", info["model"], info["pipeline_class"], info["device"], info["dtype"])
    return pipe, info


def call_kwargs(pipe) -> dict:
    """Extra `__call__` arguments: the requested size is kept (PixArt's resolution binning off), and
    PixArt's caption cleaning is switched off explicitly where the pipeline would switch it off anyway
    (bs4/ftfy missing) instead of warning on every call."""
    from diffusers.utils import is_bs4_available, is_ftfy_available

    params = inspect.signature(pipe.__call__).parameters
    out = {"use_resolution_binning": False} if "use_resolution_binning" in params else {}
    if "clean_caption" in params and not (is_bs4_available() and is_ftfy_available()):
        out["clean_caption"] = False
    return out
