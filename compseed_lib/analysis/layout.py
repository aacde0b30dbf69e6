"""Seed-to-layout heatmaps: where a seed puts objects, averaged over prompts.

Inputs: a Run and a stage (images + ledger), object masks from the mini-world judge's boxes.
Outputs: per-seed heatmaps (seed -> H x W array), the same-seed vs different-seed heatmap
correlation across disjoint prompt halves, and figures.

Usage:
    masks = object_masks(run, "base")                       # DataFrame: prompt_id, seed, mask
    stats = heatmap_reliability(masks, half_a, half_b)       # same-seed r vs different-seed r
    fig = plot_heatmaps(masks, best_seeds, worst_seeds)
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def unsupported(world: str) -> str | None:
    """Why the layout analysis cannot run for a run's prompt world (None when it can): object masks come
    from the mini world's exact judge, which reads only mini-world images."""
    if world != "miniworld":
        return (f"layout heatmaps need object masks, which only the mini world's exact judge gives; this run's "
                f"prompts are from {world!r}: skipped")
    return None


def object_masks(run, stage: str) -> pd.DataFrame:
    """One boolean mask per image: pixels inside any object box the judge found."""
    from ..miniworld import judge_scene

    rows = []
    for r in run.ledger.images(stage).itertuples():
        img = np.asarray(run.read_image(r))  # checked against its ledger hash: a damaged file is named
        mask = np.zeros(img.shape[:2], dtype=np.float32)
        for b in judge_scene(img).boxes:
            mask[int(b.y0):int(np.ceil(b.y1)), int(b.x0):int(np.ceil(b.x1))] = 1.0
        rows.append({"prompt_id": r.prompt_id, "seed": int(r.seed), "mask": mask})
    return pd.DataFrame(rows)


def seed_heatmaps(masks: pd.DataFrame, prompt_ids=None) -> dict[int, np.ndarray]:
    """Mean object mask per seed over the given prompts (all when None)."""
    df = masks if prompt_ids is None else masks[masks["prompt_id"].isin(set(prompt_ids))]
    return {int(s): np.mean(np.stack(g["mask"].to_list()), axis=0) for s, g in df.groupby("seed")}


def heatmap_reliability(masks: pd.DataFrame, half_a, half_b) -> dict[str, float]:
    """Correlation of a seed's heatmap across prompt halves, against pairs of different seeds."""
    ha, hb = seed_heatmaps(masks, half_a), seed_heatmaps(masks, half_b)
    seeds = sorted(set(ha) & set(hb))
    corr = lambda x, y: float(np.corrcoef(x.ravel(), y.ravel())[0, 1])  # noqa: E731
    same = [corr(ha[s], hb[s]) for s in seeds]
    diff = [corr(ha[s], hb[t]) for s in seeds for t in seeds if s != t]
    return {"seeds": len(seeds), "same_seed_r": float(np.nanmean(same)) if same else float("nan"),
            "different_seed_r": float(np.nanmean(diff)) if diff else float("nan")}


def plot_heatmaps(masks: pd.DataFrame, best: list[int], worst: list[int], title: str = ""):
    """Heatmaps of the best and worst seeds beside the mean over all seeds."""
    maps = seed_heatmaps(masks)
    mean = np.mean(np.stack(list(maps.values())), axis=0)
    panels = [("mean of all seeds", mean)] + [(f"best: seed {s}", maps[s]) for s in best] + \
        [(f"worst: seed {s}", maps[s]) for s in worst]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.9 * len(panels), 2.3), squeeze=False)
    for ax, (name, m) in zip(axes[0], panels):
        ax.imshow(m, cmap="magma", vmin=0, vmax=max(float(m.max()), 1e-6))
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title or "where each seed puts objects (fraction of prompts)", fontsize=9)
    fig.tight_layout()
    return fig
