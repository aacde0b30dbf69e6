"""Tiny random pipelines and tokenizers for tests and smoke configs: genuine diffusers/transformers classes
on tiny configs, with random but deterministic weights (seed 0).

Each registered pipeline is built once into `$COMPSEED_CACHE/pipelines/<name>` (default
`~/.cache/compseed`), through a temp folder renamed into place so a killed build leaves nothing
half-made, and `pipelines.load_pipeline` loads it back with `DiffusionPipeline.from_pretrained(folder)`,
so tests exercise the same loading path as a real model. No tokenizer file is downloaded: tiny-sd's
`CLIPTokenizer` reads a byte-level vocab.json/merges.txt written here, tiny-pixart's `T5Tokenizer` a
character-level Unigram `tokenizer.json` (no sentencepiece model needed).

Usage:
    folder = registered_folder("tiny-sd")      # built on first use
    pipe = build_tiny_sd()                      # in memory, random weights
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import string
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)
BUILD_VERSION = 3  # bump when a tiny config changes, so cached folders are rebuilt
TEXT_DIM = 32  # width of both tiny text encoders = cross-attention width


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


def _tiny_pixart(sample_size: int, make_vae: Callable):
    """PixArtAlphaPipeline: T5 encoder, 2-layer PixArt transformer over `sample_size`² latents with patch
    2 and learned sigma (8 output channels), ada-norm-single, the VAE `make_vae()` makes, DPM-Solver++."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    tok = _t5_tokenizer()
    text = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2,
                                   num_heads=4, relative_attention_num_buckets=8, pad_token_id=0,
                                   eos_token_id=1, decoder_start_token_id=0))
    transformer = PixArtTransformer2DModel(
        sample_size=sample_size, num_layers=2, patch_size=2, attention_head_dim=16, num_attention_heads=2,
        caption_channels=TEXT_DIM, in_channels=4, out_channels=8, cross_attention_dim=32,
        attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6)
    return PixArtAlphaPipeline(tokenizer=tok, text_encoder=text, vae=make_vae(), transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())


def build_tiny_pixart():
    """PixArtAlphaPipeline: T5 encoder, 2-layer PixArt transformer (32 px, 4x8x8 latents), DPM-Solver++."""
    return _tiny_pixart(8, _tiny_vae)


def _tiny_vae8(sample_size: int):
    """AutoencoderKL with Stable Diffusion's factor 8 (three downsamples), a few channels wide."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(4, 4, 8, 8),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         layers_per_block=1, norm_num_groups=4, sample_size=sample_size)


def build_tiny_pixart512():
    """PixArtAlphaPipeline of PixArt-XL-2-512x512's shape at a tiny width: SD's factor-8 VAE (512 px ->
    4x64x64 latents), the PixArt transformer with patch 2 over 64x64 latents, a T5 encoder with 120
    tokens. For rehearsing the paper's PixArt-alpha config (tests/paper_rehearsal.py)."""
    return _tiny_pixart(64, lambda: _tiny_vae8(512))


def build_tiny_sd21():
    """StableDiffusionPipeline of Stable Diffusion 2.1's shape at a tiny width: a VAE with SD's factor 8
    (768 px -> 4x96x96 latents), a UNet of SD 2.1's four levels (cross-attention in levels 1 and 2 and
    the mid block, which the paper's d1d2mu1u2 selection tunes; per-level head counts, linear
    projections, upcast attention), a CLIP text encoder with GELU as OpenCLIP's, and SD 2.1's
    v-prediction DDIM scheduler. For rehearsing the paper's SD 2.1 config (tests/paper_rehearsal.py)
    where the weights cannot be had. One difference from SD 2.1: level 0 has no attention (at 96x96
    latents its self-attention over 9,216 tokens took most of the rehearsal's time on a CPU; nothing the
    paper tunes or reads is there)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = _clip_tokenizer()
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=tok.model_max_length, projection_dim=TEXT_DIM,
        hidden_act="gelu", bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id))
    vae = _tiny_vae8(768)
    unet = UNet2DConditionModel(
        sample_size=96, in_channels=4, out_channels=4, block_out_channels=(8, 16, 32, 32), layers_per_block=1,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 2 + ("UpBlock2D",), cross_attention_dim=TEXT_DIM,
        attention_head_dim=(1, 2, 4, 4), use_linear_projection=True, upcast_attention=True, norm_num_groups=8)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                              prediction_type="v_prediction")
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


PIPELINES: dict[str, Callable] = {"tiny-sd": build_tiny_sd, "tiny-pixart": build_tiny_pixart,
                                  "tiny-sd21": build_tiny_sd21, "tiny-pixart512": build_tiny_pixart512}


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
        raise ValueError(f"{name!r} is not a registered pipeline: use one of {sorted(PIPELINES)}")
    final = cache_root() / name
    if _is_current(final, name):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{name}.*.tmp"):  # left by a build killed over an hour ago
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    import torch  # only to build: the check that a registered name exists (sources.py) loads no model library

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


