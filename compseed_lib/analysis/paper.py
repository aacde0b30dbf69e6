"""The figures a paper on this method shows, from a finished run, in one style, as PNG and PDF.

Each figure is one function returning a matplotlib Figure; `save_paper_figure` writes both formats with
fixed metadata (no creation date), so re-running on the same run gives the same files.
  seed_layout_grid    the same seeds across prompts: a seed keeps its layout (rows prompts, columns seeds)
  before_after        image pairs on the same (prompt, seed): base vs a fine-tuned arm, fixed ones first
  attention_good_bad  where the object word's attention goes for the best and the worst seeds
  (per-seed ranking: seed_plots.plot_seed_accuracy; per-count/relation accuracy of every arm:
   evaluate.plot_per_category; layout heatmaps of good vs bad seeds: layout.plot_heatmaps)

Usage:
    with paper_style():
        fig = before_after(run, "eval_base", "eval_qk", judged_a, judged_b)
    save_paper_figure(fig, run.root / "figures" / "paper", "before_after")
"""
from __future__ import annotations

import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd

STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
         "legend.fontsize": 7, "figure.dpi": 100, "savefig.dpi": 200, "font.family": "DejaVu Sans",
         "axes.spines.top": False, "axes.spines.right": False, "image.interpolation": "nearest",
         "pdf.fonttype": 42, "svg.hashsalt": "compseed"}


@contextmanager
def paper_style() -> Iterator[None]:
    """The one style of every paper figure (fonts, sizes, no top/right spines)."""
    with mpl.rc_context(STYLE):
        yield


def save_paper_figure(fig, folder: str | Path, name: str) -> list[Path]:
    """`<folder>/<name>.png` and `.pdf`, deterministic (no creation date or software stamp)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None,
                                                              "Creator": None})):
        path = folder / f"{name}.{fmt}"
        fig.savefig(path, format=fmt, bbox_inches="tight", metadata=meta)
        out.append(path)
    return out


def _judged_map(judged: pd.DataFrame | None) -> dict:
    if judged is None or judged.empty:
        return {}
    return {(r.prompt_id, int(r.seed)): r.correct for r in judged.itertuples()}


def seed_layout_grid(run, stage: str, prompt_ids: Sequence[str], seeds: Sequence[int]):
    """Rows are prompts, columns seeds (grids.image_grid): read down a column to see a seed keep its layout."""
    from .grids import image_grid

    fig = image_grid(run, stage, prompt_ids=list(prompt_ids), seeds=list(seeds))
    fig.suptitle("one seed, many prompts: the layout follows the seed")
    return fig


def before_after(run, stage_a: str, stage_b: str, judged_a: pd.DataFrame, judged_b: pd.DataFrame,
                 n: int = 6, labels: tuple[str, str] = ("base", "fine-tuned")):
    """Pairs of images on the same (prompt, seed): top `stage_a`, bottom `stage_b`; pairs `stage_b` fixed
    come first, then ones it broke, then unchanged ones (each group in prompt, seed order)."""
    import matplotlib.pyplot as plt

    a, b = _judged_map(judged_a), _judged_map(judged_b)
    keys = sorted(set(a) & set(b))
    if not keys:
        raise ValueError(f"stages {stage_a!r} and {stage_b!r} share no judged (prompt, seed) pair")
    rank = {(False, True): 0, (True, False): 1}
    keys = sorted(keys, key=lambda k: (rank.get((bool(a[k]), bool(b[k])), 2), k))[:n]
    rows_a = {(r.prompt_id, int(r.seed)): r for r in run.ledger.images(stage_a).itertuples()}
    rows_b = {(r.prompt_id, int(r.seed)): r for r in run.ledger.images(stage_b).itertuples()}
    fig, axes = plt.subplots(2, len(keys), squeeze=False, figsize=(1.2 * len(keys) + 0.8, 3.0))
    for j, k in enumerate(keys):
        for i, (rows, verdict, label) in enumerate(((rows_a, a, labels[0]), (rows_b, b, labels[1]))):
            ax = axes[i, j]
            ax.imshow(np.asarray(run.read_image(rows[k])))
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(True)
                side.set_edgecolor("tab:green" if verdict[k] else "tab:red")
                side.set_linewidth(2)
            if j == 0:
                ax.set_ylabel(label)
        axes[0, j].set_title("\n".join(textwrap.wrap(f"{rows_a[k].prompt} (seed {k[1]})", 18)), fontsize=6)
    fig.suptitle(f"same prompt, same seed: {labels[0]} (top) and {labels[1]} (bottom); green = judged right")
    fig.tight_layout()
    return fig


def attention_good_bad(pipe, info: dict, prompt: str, word: str, good: Sequence[int], bad: Sequence[int],
                       steps: int, guidance: float, size: int, generator_device: str = "cpu"):
    """Images of `prompt` under the best and the worst seeds, each with the attention to `word` beside it."""
    import matplotlib.pyplot as plt

    from ..attention import word_attention

    seeds = list(good) + list(bad)
    images, maps = word_attention(pipe, info, prompt, word, seeds, steps, guidance, size, size, generator_device)
    fig, axes = plt.subplots(2, len(seeds), squeeze=False, figsize=(1.1 * len(seeds) + 0.6, 2.6))
    for j, s in enumerate(seeds):
        axes[0, j].imshow(images[j])
        axes[0, j].set_title(f"{'good' if j < len(good) else 'bad'} seed {s}")
        axes[1, j].imshow(maps[j], cmap="magma")
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[1, 0].set_ylabel(f"attention\nto '{word}'")
    fig.suptitle(f"{prompt!r}: good and bad seeds, and where '{word}' is attended")
    fig.tight_layout()
    return fig
