"""Loading diffusers text-to-image pipelines: a shipped or registered name, a local folder, or a hub id.

Inputs: a `ModelConfig` — `pipeline` is a shipped name (`SHIPPED`: miniworld, miniworld-pixart), a registered tiny
pipeline (`testing.PIPELINES`: tiny-sd, tiny-pixart, built from configs), a
local folder holding `model_index.json`, or a hub id (with `revision`); `device`/`dtype` ('auto' or
explicit); `generator_device` (where each seed's noise is drawn: see generate.py).
Outputs: `(pipe, info)` — the pipeline on its device with progress bars off, and a dict recording
what decides pixels (model, revision, class, device, dtype, generator device, sampler, latent shape).

Loading only: the tiny random pipelines used by tests and smoke configs are built in `testing.py`;
here they load back with `DiffusionPipeline.from_pretrained(folder)`, the same path as a real model.

Usage:
    pipe, info = load_pipeline(ModelConfig(pipeline="tiny-sd"))
    latent_shape(pipe, 32, 32)   # -> (4, 8, 8)
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path

import torch

from .config import DEVICES, DTYPES, ModelConfig
from .sources import (
    DELTA_FILE,
    SHIPPED,
    TEXT_ENCODER_PREFIX,
    ModelLoadError,
    check_source,
    finetune_base,
    finetune_folder,
)
from .testing import registered_folder

log = logging.getLogger(__name__)
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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


MAX_TEXT_TOKENS = 120  # PixArt-alpha's max_sequence_length: the window of a T5 tokenizer without one


def text_ids(pipe, texts: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, attention mask) of `texts` as the pipeline's text encoder takes them: padded to the
    tokenizer's window (at most MAX_TEXT_TOKENS), truncated beyond it."""
    tok = pipe.tokenizer
    got = tok(texts, padding="max_length", max_length=min(int(tok.model_max_length), MAX_TEXT_TOKENS),
              truncation=True, return_tensors="pt")
    return got.input_ids.to(device), got.attention_mask.to(device)


def encode_text(pipe, texts: list[str], device, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(text states, attention mask) the denoiser attends to, as the pipeline makes them: CLIP states
    of max-length padded ids, mask None (SD family); T5 states with padding masked, and the mask
    (PixArt, whose transformer masks the padding in cross-attention too)."""
    enc = pipe.text_encoder
    masked = getattr(denoiser(pipe), "config", {}).get("caption_channels") is not None
    ids, mask = text_ids(pipe, texts, device)
    with torch.no_grad():
        states = torch.cat([enc(ids[i:i + batch], attention_mask=mask[i:i + batch] if masked else None)[0]
                            for i in range(0, len(ids), batch)])
    return states, (mask if masked else None)


def prompt_problems(pipe, texts: list[str]) -> list[str]:
    """What the pipeline's tokenizer would silently lose of each prompt: words it maps to its unknown
    token (a word-level vocabulary, like the mini world's, has no "dogs" or "balsl") and words cut off
    beyond the text encoder's window. One message per prompt with a problem, naming the words."""
    import re

    tok = getattr(pipe, "tokenizer", None)
    if tok is None:
        return []
    window = min(int(tok.model_max_length), MAX_TEXT_TOKENS)
    unk = tok.unk_token_id
    specials = set(tok.all_special_ids)
    out = []
    for text in dict.fromkeys(texts):
        unknown = []
        if unk is not None:
            for word in dict.fromkeys(re.findall(r"[\w'-]+", text)):
                if unk in tok(word, add_special_tokens=False).input_ids:
                    unknown.append(word)
        if unknown:
            out.append(f"prompt {text!r}: the text encoder does not know {unknown} (each becomes its unknown "
                       f"token, so the image ignores it)")
        ids = tok(text, truncation=False, verbose=False).input_ids
        if len(ids) > window:
            kept = tok(text, truncation=True, max_length=window).input_ids
            dropped = tok.decode([i for i in ids[len(kept) - 1:] if i not in specials]).strip()
            out.append(f"prompt {text!r} is longer than the text encoder's window of {window} tokens: "
                       f"{dropped!r} is cut off")
    return out


def denoise(net, latents, t, states, mask=None):
    """One prediction of the denoiser (UNet or PixArt transformer) from noisy latents and text states;
    a transformer that predicts a variance too gives only its first `in_channels` channels."""
    if getattr(net.config, "caption_channels", None) is not None:
        out = net(latents, encoder_hidden_states=states, timestep=t, encoder_attention_mask=mask,
                  added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
        return out[:, :latents.shape[1]]
    return net(latents, t, encoder_hidden_states=states).sample


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    """Latent (C, h, w) of one image of `height` x `width` pixels."""
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    if height <= 0 or width <= 0 or height % factor or width % factor:
        raise ValueError(f"image size {height}x{width} must be positive multiples of {factor} "
                         f"(the VAE scale factor of {type(pipe).__name__})")
    return int(denoiser(pipe).config.in_channels), height // factor, width // factor


# ------------------------------------------------------------------ loading
def from_pretrained(source: str, revision: str | None = None, dtype: torch.dtype = torch.float32):
    """`DiffusionPipeline.from_pretrained` with every component in `dtype` (fp16 weights on disk are
    upcast: transformers would otherwise keep a text encoder in the dtype it was saved in)."""
    from diffusers import DiffusionPipeline
    from diffusers.utils import deprecation_utils

    # diffusers >= 0.36 renamed torch_dtype to dtype (the old name warns); older ones know only torch_dtype
    key = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    kwargs = {key: dtype} | ({"revision": revision} if revision else {})
    return DiffusionPipeline.from_pretrained(source, **kwargs)


def _load_errors() -> tuple[type[BaseException], ...]:
    """What a broken or missing model raises while loading (not out-of-memory, not a bug)."""
    from huggingface_hub.errors import EntryNotFoundError
    from safetensors import SafetensorError

    return OSError, ValueError, KeyError, EntryNotFoundError, SafetensorError


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
    # 2. Resolve the source (shipped, registered, folder, hub) and load it; only loading failures are
    #    reworded (missing or broken files, bad configs): out-of-memory and bugs keep their own error
    source, tuned = cfg.pipeline, finetune_folder(cfg.pipeline)
    if tuned is not None:  # the base model (checked as it loads), then the fine-tune's changed weights on top
        pipe, info = load_pipeline(dataclasses.replace(cfg, pipeline=finetune_base(tuned), revision=None))
        apply_delta(pipe, tuned)
        return pipe, {**info, "model": source, "base_model": info["model"]}
    kind = check_source(cfg)
    if kind == "shipped":
        where = str(SHIPPED[source])
    elif kind == "registered":
        where = str(registered_folder(source))
    else:
        where = str(Path(source).expanduser()) if kind == "folder" else source
    try:
        pipe = from_pretrained(where, cfg.revision if kind == "hub" else None, dtype)
    except _load_errors() as e:
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        hint = {"registered": f"delete {where} to rebuild it", "shipped": "restore models/ from git",
                "folder": "check the folder's files", "hub": "check the id, revision and token"}[kind]
        raise ModelLoadError(f"{kind} pipeline {source!r} does not load: {type(e).__name__}: {reason} ({hint})") from e
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


def compile_denoiser(pipe) -> None:
    """`torch.compile` the denoiser in place, once (a compiled one is left as it is). The first batch of
    each new shape pays the compile (about a minute per shape for the mini-world models on one CPU
    thread); outputs equal the eager model's up to float rounding (measured: 3e-6 on a noise prediction).
    Attention processors installed later (attention maps, guidance, regional prompts) recompile. A compile
    that fails (no C++ compiler, a broken inductor cache) falls back to the eager model with a warning
    instead of ending the run."""
    import torch._dynamo

    net = denoiser(pipe)
    if not getattr(net, "_compiled_call_impl", None):
        torch._dynamo.config.suppress_errors = True
        net.compile()
        log.info("compiled %s with torch.compile (the first batch of each shape compiles)", type(net).__name__)


def _masks_text(pipe) -> bool:
    """Whether the denoiser masks text padding in cross-attention (PixArt), so padding columns can go."""
    return getattr(getattr(denoiser(pipe), "config", None), "caption_channels", None) is not None


class PromptStates:
    """Each distinct prompt's text states, made once by the pipeline's own `encode_prompt` and kept, and
    the `__call__` arguments that hand them to the pipeline instead of the prompt strings.

    A seed-mining batch repeats each prompt once per seed and the unconditional prompt "" once per image;
    the pipeline would encode all of them on every call. Here each text is encoded once per run. Where
    the denoiser masks padding (PixArt: T5 states padded to 120 tokens, padding masked in cross-attention),
    the padding columns no prompt in the batch uses are cut: masked keys add nothing to attention, so
    the images are those of the padded states up to float rounding, and the denoiser attends over the
    batch's longest prompt instead of 120 tokens. SD's CLIP states keep their 77 positions (the UNet
    attends to the padding tokens' states). Pipelines of other classes get the prompt strings.

    Usage:
        states = PromptStates(pipe)
        pipe(**states(["two stars", "a ball"], guidance=4.0), latents=..., num_inference_steps=...)
    """

    def __init__(self, pipe):
        from diffusers import PixArtAlphaPipeline, PixArtSigmaPipeline, StableDiffusionPipeline

        self.pipe, self._cache = pipe, {}
        self.kind = ("pixart" if isinstance(pipe, PixArtAlphaPipeline | PixArtSigmaPipeline) and _masks_text(pipe)
                     else "sd" if isinstance(pipe, StableDiffusionPipeline) else None)
        clean = call_kwargs(pipe).get("clean_caption", True)  # as `__call__` would clean each caption
        self._encode_kwargs = {"clean_caption": clean} if self.kind == "pixart" else {}

    def _encode(self, texts: list[str]) -> None:
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if not new:
            return
        pipe, device = self.pipe, self.pipe._execution_device
        with torch.inference_mode():
            if self.kind == "sd":
                states, _ = pipe.encode_prompt(new, device, 1, False)
                masks = [None] * len(new)
            else:
                states, masks, _, _ = pipe.encode_prompt(new, False, device=device, **self._encode_kwargs)
        for i, text in enumerate(new):
            self._cache[text] = (states[i], masks[i])

    def __call__(self, texts: list[str], guidance: float) -> dict:
        """`__call__` keyword arguments for a batch of prompts (with the unconditional "" when guided)."""
        if self.kind is None:
            return {"prompt": list(texts)}
        guided = guidance > 1.0  # diffusers' do_classifier_free_guidance
        self._encode(list(texts) + ([""] if guided else []))
        states = torch.stack([self._cache[t][0] for t in texts])
        if self.kind == "sd":
            out = {"prompt_embeds": states}
            if guided:
                out["negative_prompt_embeds"] = self._cache[""][0].expand_as(states)
            return out
        masks = torch.stack([self._cache[t][1] for t in texts])
        neg, neg_mask = self._cache[""] if guided else (None, None)
        used = int(max(masks.sum(1).max(), neg_mask.sum() if guided else 0))  # right padding: keep 0..used-1
        out = {"prompt_embeds": states[:, :used], "prompt_attention_mask": masks[:, :used], "negative_prompt": None}
        if guided:
            out["negative_prompt_embeds"] = neg[:used].expand(len(texts), -1, -1)
            out["negative_prompt_attention_mask"] = neg_mask[:used].expand(len(texts), -1)
        return out


def apply_delta(pipe, folder: str | Path) -> None:
    """Load a fine-tune's changed weights into a pipeline whose denoiser is its base model's."""
    from safetensors.torch import load_file

    net = denoiser(pipe)
    delta = load_file(str(Path(folder) / DELTA_FILE))
    params = dict(net.named_parameters())
    text = {k[len(TEXT_ENCODER_PREFIX):]: v for k, v in delta.items() if k.startswith(TEXT_ENCODER_PREFIX)}
    delta = {k: v for k, v in delta.items() if not k.startswith(TEXT_ENCODER_PREFIX)}
    te = getattr(pipe, "text_encoder", None)
    te_params = dict(te.named_parameters()) if te is not None else {}
    for part, have, model in ((delta, params, net), (text, te_params, te)):
        unknown = sorted(set(part) - set(have))
        if unknown:
            raise ValueError(f"fine-tune {folder} changes {unknown[:3]}, which {type(model).__name__} does not "
                             f"have: wrong base model?")
    with torch.no_grad():
        for part, have in ((delta, params), (text, te_params)):
            for k, v in part.items():
                have[k].copy_(v.to(have[k].device, have[k].dtype))
