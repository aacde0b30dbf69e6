"""InfSplign-style attention-loss guidance: push the two objects of a spatial prompt apart along the relation's
axis by moving the latent against the gradient of a loss on their cross-attention maps, while denoising.

Method (after InfSplign, Splign's inference-time form): at each guided denoising step the latent is made a leaf
that keeps gradients and the denoiser runs once on the conditional text alone with the attention store in its
differentiable mode (`attention.capture(..., differentiable=True)`). The maps of the chosen layers (the UNet's
up-blocks; the second half of a PixArt transformer's blocks) are averaged; each object's map is the sum of its
word's tokens. From them:
  - spatial: the centroids c_A, c_B (coordinates 0..1, y downwards) give the signed offset d along the
    relation's axis (left: x_B - x_A; right: x_A - x_B; above: y_B - y_A; below: y_A - y_B), and the loss is
    the published GELU(alpha * (margin - d)), alpha 0.75, margin 0.25;
  - presence: each object's peak (mean of its top 1/16 pixels of the map renormalised over the prompt's words)
    should reach `presence_min`: mean of relu(presence_min - peak);
  - balance: the two objects' attention masses should be alike: |m_A - m_B| / (m_A + m_B).
The latent moves by -scale * grad (`iterations` times per guided step; InfSplign's code adds the gradient to
the noise prediction by default and has this latent update as an option), then the step is the normal
classifier-free-guidance step of the pipeline's own scheduler. The loss reads the layer-averaged map (InfSplign
averages per-layer losses). The raw gradient is small (rms ~1e-3 on the mini-world generators), hence scales in
the hundreds. Prompts without a relation (counting) get no
guidance: their latents are never changed, and the log says so.

Inputs: a loaded diffusers pipeline (SD family or PixArt), prompts (str or `prompts.Prompt`) paired with seeds
(one image per pair; the seed's initial noise is the generation engine's, so seed s here starts from the same
noise as seed s of the base arm), a `GuidanceConfig`, and the call settings.
Outputs: PIL images; with `return_trace=True` also a DataFrame of each guided update (prompt, seed, step,
iteration, loss terms, centroids, offset d).

Usage:
    from compseed_lib.methods import guidance
    cfg = guidance.GuidanceConfig(scale=20.0, end=5)
    images = guidance.generate_guided(pipe, ["a kite on the left of a ring"], [0], cfg, steps=10,
                                      guidance_scale=4.0, height=32, width=32)
With `scale=0` the loop is the plain pipeline's: the same seed gives the pipeline's image.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from ..attention import capture, cross_attention_layers, word_tokens
from ..config import GuidanceConfig, check_guidance
from ..generate import seed_draw
from ..pipelines import MAX_TEXT_TOKENS, denoise, denoiser, encode_text, latent_shape
from ..prompts import Prompt, PromptFileError, parse_spatial

log = logging.getLogger(__name__)
# relation -> (axis: 0 = x, 1 = y with y downwards, sign): d = sign * (c_B - c_A) is positive when it holds
RELATION_AXIS: dict[str, tuple[int, int]] = {"left": (0, 1), "right": (0, -1), "above": (1, 1), "below": (1, -1)}


# ---------------------------------------------------------------------------- prompts -> object tokens
@dataclass(frozen=True)
class Relation:
    """Object A's and B's token positions in the encoded prompt and the relation between them."""

    a: str
    relation: str
    b: str
    tokens_a: tuple[int, ...]
    tokens_b: tuple[int, ...]
    content: tuple[int, ...]  # every word's tokens (renormalising the maps over the prompt's words)


def relation_of(tokenizer, prompt: str | Prompt, window: int) -> Relation | None:
    """The prompt's two objects and relation from the mini-world prompt grammar ('a X on the left of a Y'),
    or None for a prompt without one (counting) or whose object words are not within the first `window`
    tokens."""
    if isinstance(prompt, Prompt):
        if prompt.kind != "spatial" or prompt.obj_b is None:
            return None
        text, a, rel, b = prompt.text, prompt.obj.name, prompt.relation, prompt.obj_b.name
    else:
        try:
            obj_a, rel, obj_b = parse_spatial(prompt)
        except PromptFileError:
            return None
        text, a, b = prompt, obj_a.name, obj_b.name
    words = word_tokens(tokenizer, text)

    def tokens(name: str) -> tuple[int, ...]:
        return tuple(sorted({i for w in name.lower().split() for i in words.get(w, []) if i < window}))

    ta, tb = tokens(a), tokens(b)
    if not ta or not tb or set(ta) == set(tb):
        log.warning("guidance: %r: object words %r / %r not found apart in its tokens; no guidance", text, a, b)
        return None
    content = tuple(sorted({i for pos in words.values() for i in pos if i < window}))
    return Relation(a, rel, b, ta, tb, content)


# ---------------------------------------------------------------------------- the loss
def _centroids(maps: torch.Tensor) -> torch.Tensor:
    """(n, r, r) non-negative maps -> (n, 2) centroids (x, y) in [0, 1], y downwards."""
    r_h, r_w = maps.shape[-2:]
    m = maps / maps.sum((-2, -1), keepdim=True).clamp_min(1e-8)
    xs = torch.linspace(0, 1, r_w, device=maps.device, dtype=maps.dtype)
    ys = torch.linspace(0, 1, r_h, device=maps.device, dtype=maps.dtype)
    return torch.stack([(m.sum(-2) * xs).sum(-1), (m.sum(-1) * ys).sum(-1)], -1)


def spatial_loss(c_a: torch.Tensor, c_b: torch.Tensor, relation: str, alpha: float = 0.75, margin: float = 0.25
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(GELU(alpha * (margin - d)), d): d the signed offset of B from A along the relation's axis."""
    if relation not in RELATION_AXIS:
        raise ValueError(f"unknown relation {relation!r}: use one of {list(RELATION_AXIS)}")
    axis, sign = RELATION_AXIS[relation]
    d = sign * (c_b[..., axis] - c_a[..., axis])
    return F.gelu(alpha * (margin - d)), d


def loss_terms(maps: dict[str, torch.Tensor], rel: Relation, cfg: GuidanceConfig) -> dict[str, torch.Tensor]:
    """Spatial, presence and balance terms (and the total) of one image; `maps` {"spatial" | "presence" |
    "balance": (tokens, r, r)} are the layer-averaged maps each term reads."""
    def objects(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return m[list(rel.tokens_a)].sum(0), m[list(rel.tokens_b)].sum(0)

    a, b = objects(maps["spatial"])
    c = _centroids(torch.stack([a, b]))
    spatial, d = spatial_loss(c[0], c[1], rel.relation, cfg.alpha, cfg.margin)
    pa, pb = objects(maps["presence"] / maps["presence"][list(rel.content)].sum(0).clamp_min(1e-8))
    k = max(1, pa.numel() // 16)
    peaks = torch.stack([pa.flatten().topk(k).values.mean(), pb.flatten().topk(k).values.mean()])
    presence = F.relu(cfg.presence_min - peaks).mean()
    ma, mb = (x.mean() for x in objects(maps["balance"]))
    balance = (ma - mb).abs() / (ma + mb).clamp_min(1e-8)
    total = cfg.w_spatial * spatial + cfg.w_presence * presence + cfg.w_balance * balance
    return dict(total=total, spatial=spatial, presence=presence, balance=balance, d=d,
                xa=c[0, 0], ya=c[0, 1], xb=c[1, 0], yb=c[1, 1], peak_a=peaks[0], peak_b=peaks[1])


def default_layers(pipe) -> tuple[str, ...]:
    """Where the loss reads attention by default: a UNet's up-blocks, or the second half of a transformer's
    blocks (PixArt has no up-blocks; its late blocks lay out the image like a UNet's decoder)."""
    net = denoiser(pipe)
    names = [n.removesuffix(".processor") for n in cross_attention_layers(net)]
    if any(n.startswith("up_blocks.") for n in names):
        return ("up_blocks",)
    blocks = sorted({int(n.split(".")[1]) for n in names if n.startswith("transformer_blocks.")})
    if not blocks:
        raise ValueError(f"{type(net).__name__} has neither up_blocks nor transformer_blocks with cross-attention")
    return tuple(f"transformer_blocks.{i}" for i in blocks[len(blocks) // 2:])


def _check_layers(pipe, layers: Sequence[str]) -> None:
    names = [n.removesuffix(".processor") for n in cross_attention_layers(denoiser(pipe))]
    for b in layers:
        if not any(n == b or n.startswith(b + ".") for n in names):
            prefixes = sorted({".".join(n.split(".")[:2]) for n in names})
            raise ValueError(f"GuidanceConfig layer {b!r} has no cross-attention layer; the denoiser has {prefixes}")


# ---------------------------------------------------------------------------- the loop
def _guide(pipe, latents, t, states, mask, rels, cfg, layers, resolution, trace, meta, step):
    """`cfg.iterations` updates latents <- latents - scale * grad of the summed loss of the related images."""
    net = denoiser(pipe)
    which = [i for i, r in enumerate(rels) if r is not None]
    for it in range(cfg.iterations):
        lat = latents[which].detach().requires_grad_(True)
        with torch.enable_grad():
            with capture(pipe, resolution, cond_only=False, guided=False, differentiable=True) as store:
                inp = pipe.scheduler.scale_model_input(lat, t)
                denoise(net, inp, t.expand(len(which)).to(inp.device), states[which],
                        None if mask is None else mask[which])
            maps = {k: store.maps(blocks=v) for k, v in layers.items()}
            terms = [loss_terms({k: m[j] for k, m in maps.items()}, rels[i], cfg) for j, i in enumerate(which)]
            total = torch.stack([x["total"] for x in terms]).sum()
            grad = torch.autograd.grad(total, lat)[0] if total.requires_grad else torch.zeros_like(lat)
        for j, i in enumerate(which):
            trace.append(dict(prompt=meta[i][0], seed=meta[i][1], step=step, iteration=it,
                              grad_rms=float(grad[j].pow(2).mean().sqrt()),
                              **{k: float(v.detach()) for k, v in terms[j].items()}))
        latents = latents.clone()
        latents[which] = (lat - cfg.scale * grad).detach().to(latents.dtype)
    return latents


def generate_guided(pipe, prompts: Sequence[str | Prompt], seeds: Sequence[int], cfg: GuidanceConfig | None = None,
                    steps: int = 10, guidance_scale: float = 4.0, height: int = 32, width: int = 32,
                    generator_device: str = "cpu", batch_size: int = 8, return_trace: bool = False):
    """Images of (prompt, seed) pairs made with attention-loss guidance (see the module docstring); with
    `return_trace` also the DataFrame of every guided update."""
    cfg = cfg or GuidanceConfig()
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts and {len(seeds)} seeds: give one seed per prompt "
                         f"(repeat prompts for several seeds)")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps ({steps}) and batch_size ({batch_size}) must be >= 1")
    start, end = check_guidance(cfg, steps)
    net = denoiser(pipe)
    shape = latent_shape(pipe, height, width)
    base = cfg.layers or default_layers(pipe)
    layers = {"spatial": base, "presence": cfg.presence_layers or base, "balance": cfg.balance_layers or base}
    for v in layers.values():
        _check_layers(pipe, v)
    resolution = cfg.resolution or min(shape[1], 32)
    device, dtype = net.device, net.dtype
    window = min(int(pipe.tokenizer.model_max_length), MAX_TEXT_TOKENS)
    texts = [p.text if isinstance(p, Prompt) else str(p) for p in prompts]
    rels = [relation_of(pipe.tokenizer, p, window) for p in prompts]
    if not any(rels):
        log.info("guidance: none of the %d prompts states a relation (counting prompts): no-op, plain sampling",
                 len(prompts))
    elif not all(rels):
        log.info("guidance: %d of %d prompts state no relation (counting): they are sampled without guidance",
                 sum(r is None for r in rels), len(prompts))
    guide = cfg.scale > 0 and any(rels)
    images, trace = [], []
    started = time.perf_counter()
    for lo in range(0, len(texts), batch_size):
        sl = slice(lo, lo + batch_size)
        images += _sample(pipe, texts[sl], list(seeds[sl]), rels[sl], cfg if guide else None, (start, end), layers,
                          resolution, steps, guidance_scale, shape, generator_device, device, dtype, trace)
    log.info("guidance: %d images in %.1f s (%.2f s/image)", len(images), time.perf_counter() - started,
             (time.perf_counter() - started) / max(1, len(images)))
    return (images, pd.DataFrame(trace)) if return_trace else images


def _sample(pipe, texts, seeds, rels, cfg, window, layers, resolution, steps, guidance_scale, shape,
            generator_device, device, dtype, trace):
    """One batch through the pipeline's pieces: the engine's per-seed noise, CFG, its scheduler, its VAE."""
    net, sched = denoiser(pipe), pipe.scheduler
    n = len(texts)
    drawn = [seed_draw(s, shape, generator_device) for s in seeds]
    latents = torch.stack([x for x, _ in drawn]).to(device, dtype) * sched.init_noise_sigma
    extra = pipe.prepare_extra_step_kwargs([g for _, g in drawn], 0.0)
    cond, cmask = encode_text(pipe, texts, device)
    cfg_on = guidance_scale > 1
    if cfg_on:
        unc, umask = encode_text(pipe, [""], device)
        states = torch.cat([unc.expand(n, -1, -1), cond]).to(dtype)
        mask = None if cmask is None else torch.cat([umask.expand(n, -1), cmask])
    else:
        states, mask = cond.to(dtype), cmask
    sched.set_timesteps(steps, device=device)
    meta = list(zip(texts, seeds, strict=True))
    for i, t in enumerate(sched.timesteps):
        if cfg is not None and window[0] <= i < window[1]:
            latents = _guide(pipe, latents, t, cond.to(dtype), cmask, rels, cfg, layers, resolution, trace, meta, i)
        with torch.no_grad():
            inp = torch.cat([latents] * 2) if cfg_on else latents
            inp = sched.scale_model_input(inp, t)
            pred = denoise(net, inp, t.expand(inp.shape[0]).to(device), states, mask)
            if cfg_on:
                uncond, text = pred.chunk(2)
                pred = uncond + guidance_scale * (text - uncond)
            latents = sched.step(pred, t, latents, **extra, return_dict=False)[0]
    with torch.no_grad():
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")


def with_scale(cfg: GuidanceConfig, scale: float) -> GuidanceConfig:
    """A copy of `cfg` with another scale (for sweeps)."""
    return dataclasses.replace(cfg, scale=scale)
