"""Cross-attention capture: which image regions each prompt word attends to, per step and per block.

An `AttentionStore` is plugged into the denoiser (UNet or PixArt transformer) through diffusers'
attention-processor extension point (`set_attn_processor`): every cross-attention layer gets a
`CaptureProcessor` that runs the layer's own processor unchanged (so images are identical with capture on
and off) and, beside it, recomputes softmax(QK^T) to record the map, averaged over heads and resized to
`resolution` x `resolution`. Self-attention layers keep their processor. Leaving the `capture` context
puts the original processors back, so capture off costs nothing. A forward pre-hook on the denoiser
counts denoising steps (a registered hook, not a patched forward).

Maps are kept per (step, layer) for the conditional half of a classifier-free-guidance batch; each map is
(batch, tokens, resolution, resolution) and sums to one over tokens at every pixel (softmax over keys,
padding included). `word_maps` merges the tokens of each asked word ("octopuses" may be several tokens).
With `differentiable=True` the maps stay on the denoiser's device inside the autograd graph (for losses on
attention, as `methods.guidance` takes); the default detaches them to the CPU.

Usage:
    with capture(pipe, resolution=16) as store:
        images = pipe(prompts, generator=gens, num_inference_steps=10).images
    maps = store.maps(steps=(0, 5), blocks=["up_blocks.1"])     # (batch, tokens, 16, 16)
    balls = word_maps(store, pipe, prompts, ["balls", "star"])   # {word: (batch, 16, 16)}
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .pipelines import denoiser


class AttentionStore:
    """Cross-attention maps of one pipeline call: {(step, layer name): (batch, tokens, r, r) float32 CPU}."""

    def __init__(self, resolution: int = 16, cond_only: bool = True, differentiable: bool = False):
        self.resolution, self.cond_only, self.differentiable = resolution, cond_only, differentiable
        self.step = -1  # advanced by the denoiser's pre-hook: 0 during the first denoising step
        self.latent_hw: tuple[int, int] | None = None
        self.records: dict[tuple[int, str], torch.Tensor] = {}

    # -------------------------------------------------------------- recording
    def begin_step(self, sample: torch.Tensor) -> None:
        self.step += 1
        self.latent_hw = tuple(sample.shape[-2:])

    def add(self, layer: str, probs: torch.Tensor, batch: int, heads: int) -> None:
        """`probs` (batch * heads, queries, tokens) from a cross-attention layer."""
        p = probs if self.differentiable else probs.detach()
        p = p.float().reshape(batch, heads, *probs.shape[1:]).mean(1)  # (B, Q, T)
        if self.cond_only and batch % 2 == 0 and self._guided:
            p = p[batch // 2:]  # [uncond, cond] as diffusers pipelines concatenate them
        h, w = self._grid(p.shape[1])
        grid = p.transpose(1, 2).reshape(p.shape[0], p.shape[2], h, w)
        if (h, w) != (self.resolution, self.resolution):
            grid = F.interpolate(grid, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        key, grid = (self.step, layer), grid if self.differentiable else grid.cpu()
        self.records[key] = grid if key not in self.records else self.records[key] + grid

    _guided = True  # set by `capture` at each step: the batch holds [uncond, cond]

    def _grid(self, queries: int) -> tuple[int, int]:
        """(h, w) of a layer's query grid, from the latent's aspect ratio."""
        lh, lw = self.latent_hw or (int(math.isqrt(queries)),) * 2
        f = math.sqrt(lh * lw / queries)
        h, w = round(lh / f), round(lw / f)
        if h * w != queries:
            raise ValueError(f"cannot lay {queries} attention queries on a grid of the latent's shape {lh}x{lw}")
        return h, w

    # -------------------------------------------------------------- reading
    @property
    def layers(self) -> list[str]:
        return sorted({k[1] for k in self.records})

    @property
    def steps(self) -> list[int]:
        return sorted({k[0] for k in self.records})

    def maps(self, steps: tuple[int, int] | None = None, blocks: Sequence[str] | None = None) -> torch.Tensor:
        """Mean map over the steps in [lo, hi) and the layers whose names start with one of `blocks`
        (e.g. "up_blocks.1", "mid_block", "transformer_blocks.3"): (batch, tokens, r, r)."""
        keys = [k for k in self.records
                if (steps is None or steps[0] <= k[0] < steps[1])
                and (blocks is None or any(k[1] == b or k[1].startswith(b + ".") for b in blocks))]
        if not keys:
            raise ValueError(f"no attention recorded for steps {steps} and blocks {blocks}: recorded steps "
                             f"{self.steps}, layers {self.layers}")
        return torch.stack([self.records[k] for k in keys]).mean(0)


class CaptureProcessor:
    """Runs the layer's own processor and records softmax(QK^T) of a cross-attention call in `store`."""

    def __init__(self, original, store: AttentionStore, name: str):
        self.original, self.store, self.name = original, store, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        if encoder_hidden_states is not None:
            with torch.set_grad_enabled(self.store.differentiable and torch.is_grad_enabled()):
                self._record(attn, hidden_states, encoder_hidden_states, attention_mask)
        return out

    def _record(self, attn, hidden_states, encoder_hidden_states, attention_mask) -> None:
        x = hidden_states
        if x.ndim == 4:
            b, c, h, w = x.shape
            x = x.view(b, c, h * w).transpose(1, 2)
        batch, tokens = encoder_hidden_states.shape[0], encoder_hidden_states.shape[1]
        mask = attn.prepare_attention_mask(attention_mask, tokens, batch) if attention_mask is not None else None
        if attn.group_norm is not None:
            x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
        ctx = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
        q = attn.head_to_batch_dim(attn.to_q(x))
        k = attn.head_to_batch_dim(attn.to_k(ctx))
        probs = attn.get_attention_scores(q, k, mask)
        self.store.add(self.name, probs, batch, attn.heads)


def cross_attention_layers(net) -> list[str]:
    """Processor names (as `attn_processors` keys) of the denoiser's cross-attention layers."""
    return [n for n in net.attn_processors if n.endswith("attn2.processor")]


def _uses_guidance(pipe) -> bool:
    """Whether the pipeline's current call doubles the batch for classifier-free guidance (SD pipelines
    record the scale of the call; others are taken to guide, as every compseed call does)."""
    scale = getattr(pipe, "_guidance_scale", None)
    return True if scale is None else scale > 1


@contextmanager
def capture(pipe, resolution: int = 16, cond_only: bool = True, guided: bool | None = None,
            differentiable: bool = False) -> Iterator[AttentionStore]:
    """Record cross-attention of every pipeline call inside the block (see the module docstring); `guided`:
    whether the calls use classifier-free guidance (None: ask the pipeline at each step); `differentiable`:
    keep the maps in the autograd graph, on the denoiser's device."""
    net = denoiser(pipe)
    store = AttentionStore(resolution, cond_only, differentiable)

    def begin(_m, args, kwargs):
        store._guided = _uses_guidance(pipe) if guided is None else guided
        store.begin_step(args[0] if args else kwargs.get("sample", kwargs.get("hidden_states")))

    before = dict(net.attn_processors)
    wanted = set(cross_attention_layers(net))
    net.set_attn_processor({n: CaptureProcessor(p, store, n.removesuffix(".processor")) if n in wanted else p
                            for n, p in before.items()})
    hook = net.register_forward_pre_hook(begin, with_kwargs=True)
    try:
        yield store
    finally:
        hook.remove()
        net.set_attn_processor(before)


# ---------------------------------------------------------------------------- tokens -> words
def word_tokens(tokenizer, prompt: str) -> dict[str, list[int]]:
    """{word: positions of its tokens in the encoded prompt} (lower-cased words; a word split into several
    tokens gets them all). Found by encoding the prompt up to and including each word, so it works for
    word-level, BPE (CLIP) and SentencePiece (T5) tokenizers alike."""
    full = tokenizer(prompt).input_ids
    content = tokenizer(prompt, add_special_tokens=False).input_ids
    start = next((i for i in range(len(full) - len(content) + 1) if full[i:i + len(content)] == content), None)
    if start is None:
        raise ValueError(f"cannot align the tokens of {prompt!r}")
    out: dict[str, list[int]] = {}
    for m in re.finditer(r"[\w'-]+", prompt):
        before = len(tokenizer(prompt[:m.start()].rstrip(), add_special_tokens=False).input_ids) if m.start() else 0
        through = len(tokenizer(prompt[:m.end()], add_special_tokens=False).input_ids)
        out.setdefault(m.group().lower(), []).extend(range(start + before, start + through))
    return out


def word_maps(store: AttentionStore, pipe, prompts: Sequence[str], words: Sequence[str],
              steps: tuple[int, int] | None = None, blocks: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """{word: (batch, r, r)}: the summed maps of each word's tokens, for each prompt of the batch (a prompt
    without the word gives zeros). Words are matched case-insensitively."""
    maps = store.maps(steps, blocks)
    if maps.shape[0] != len(prompts):
        raise ValueError(f"the store holds {maps.shape[0]} images, {len(prompts)} prompts given")
    out = {w: torch.zeros(maps.shape[0], *maps.shape[2:]) for w in words}
    for i, prompt in enumerate(prompts):
        positions = word_tokens(pipe.tokenizer, prompt)
        for w in words:
            idx = [j for j in positions.get(w.lower(), []) if j < maps.shape[1]]
            if idx:
                out[w][i] = maps[i, idx].sum(0)
    return out


def word_attention(pipe, info: dict, prompt: str, word: str, seeds: Sequence[int], steps: int, guidance: float,
                   height: int, width: int, generator_device: str = "cpu"):
    """Remake `prompt` under `seeds` (the engine's per-seed noise) with capture on: (images (n, H, W, 3) in
    [0, 1], the maps of `word`, (n, r, r) at r = min(height, 64))."""
    from .generate import seed_noise
    from .pipelines import latent_shape

    noise = seed_noise(list(seeds), latent_shape(pipe, height, width), generator_device)
    with capture(pipe, resolution=min(height, 64)) as store, torch.no_grad():
        images = pipe([prompt] * len(seeds), latents=noise.to(info["device"], pipe.dtype), num_inference_steps=steps,
                      guidance_scale=guidance, height=height, width=width, output_type="np",
                      **info["call_kwargs"]).images
    return images, word_maps(store, pipe, [prompt] * len(seeds), [word])[word].numpy()
