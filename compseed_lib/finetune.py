"""Which weights a fine-tune trains: the paper's q/k selection, patterns, transformer blocks, LoRA targets.

The paper fine-tunes only the query and key projections of the self- and cross-attention layers of the
UNet blocks down_blocks.1-2, mid_block and up_blocks.1-2 ("d1d2mu1u2": 46.78M parameters on Stable
Diffusion 2.1). Other selections are module-name patterns; for a transformer denoiser (PixArt-style)
the selection is by block index. LoRA (peft) adapts the same modules instead of training them.

Inputs: a denoiser (`UNet2DConditionModel` or `PixArtTransformer2DModel`), a selection name, regex
patterns, or block indices.
Outputs: the selected parameter names; `freeze_except` leaves only them trainable and returns the count;
`lora_targets` gives peft's `target_modules` for the same projections.

Usage:
    n = freeze_except(unet, "d1d2mu1u2")          # 46,776,320 on SD 2.1's UNet
    names = selected(transformer, blocks=[0, 1, 2])
    LoraConfig(r=8, target_modules=lora_targets(unet, "d1d2mu1u2"))
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import torch

log = logging.getLogger(__name__)
_QK = r"attn[12]\.to_[qk]\.weight$"
SELECTIONS: dict[str, list[str]] = {
    # the paper's: q and k of self- (attn1) and cross-attention (attn2) in d1, d2, mid, u1, u2
    "d1d2mu1u2": [rf"^down_blocks\.[12]\..*{_QK}", rf"^mid_block\..*{_QK}", rf"^up_blocks\.[12]\..*{_QK}"],
    "all_qk": [rf".*{_QK}"],  # q and k of every attention layer (UNet or transformer)
}


def _patterns(selection: str | Sequence[str]) -> list[str]:
    if isinstance(selection, str):
        if selection not in SELECTIONS:
            raise ValueError(f"unknown selection {selection!r}: use one of {sorted(SELECTIONS)} or a list of "
                             f"regex patterns over parameter names")
        return SELECTIONS[selection]
    if not selection:
        raise ValueError("an empty list of patterns selects nothing")
    for p in selection:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"bad selection pattern {p!r}: {e}") from None
    return list(selection)


def selected(model: torch.nn.Module, selection: str | Sequence[str] = "d1d2mu1u2",
             blocks: Sequence[int] | None = None) -> list[str]:
    """Names of the parameters a selection picks; `blocks` (transformer models) picks q/k of those blocks."""
    names = [n for n, _ in model.named_parameters()]
    if blocks is not None:
        n_blocks = len(getattr(model, "transformer_blocks", []))
        if not n_blocks:
            raise ValueError(f"{type(model).__name__} has no transformer_blocks: select by pattern instead")
        bad = [b for b in blocks if not 0 <= b < n_blocks]
        if bad:
            raise ValueError(f"blocks {bad} out of range: the model has {n_blocks} transformer blocks")
        wanted = [rf"^transformer_blocks\.{b}\.{_QK}" for b in blocks]
    else:
        wanted = _patterns(selection)
    regs = [re.compile(p) for p in wanted]
    picked = [n for n in names if any(r.search(n) for r in regs)]
    if not picked:
        raise ValueError(f"selection {selection if blocks is None else blocks!r} matches no parameter of "
                         f"{type(model).__name__} (e.g. {names[:3]})")
    return picked


def freeze_except(model: torch.nn.Module, selection: str | Sequence[str] = "d1d2mu1u2",
                  blocks: Sequence[int] | None = None) -> int:
    """Freeze everything but the selected parameters; returns (and logs) the trainable parameter count."""
    keep = set(selected(model, selection, blocks))
    model.requires_grad_(False)
    n = 0
    for name, p in model.named_parameters():
        if name in keep:
            p.requires_grad_(True)
            n += p.numel()
    log.info("trainable: %d tensors, %.2fM parameters of %.2fM", len(keep), n / 1e6,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return n


def lora_targets(model: torch.nn.Module, selection: str | Sequence[str] = "d1d2mu1u2",
                 blocks: Sequence[int] | None = None) -> list[str]:
    """peft `target_modules`: the full names of the selected projection modules (their '.weight' dropped)."""
    return [n.removesuffix(".weight") for n in selected(model, selection, blocks)]
