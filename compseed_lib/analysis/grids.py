"""Figures that show images: example grids of a stage, judged-count confusion.

Inputs: a Run and a stage name (images/<stage>/ and the ledger), or a judged DataFrame.
Outputs: matplotlib Figures (never shown here; notebooks display them, Run.save_figure stores them).

Usage:
    fig = image_grid(run, "base", n_prompts=6, n_seeds=8)
    fig = arm_grid(run, {"base": "eval_base", "guided": "method_guided"}, prompt_id, seeds=[1000, 1001])
    fig = count_confusion(run.ledger.judgements("base"))
"""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def image_grid(run, stage: str, prompt_ids: list[str] | None = None, seeds: list[int] | None = None,
               n_prompts: int = 6, n_seeds: int = 8, judged: pd.DataFrame | None = None):
    """Rows are prompts, columns seeds; a green/red frame marks judged right/wrong when given."""
    rows = run.ledger.images(stage)
    if rows.empty:
        raise ValueError(f"stage {stage!r} in {run.root} has no images yet")
    prompt_ids = prompt_ids or list(dict.fromkeys(rows["prompt_id"]))[:n_prompts]
    seeds = seeds or sorted(rows["seed"].unique())[:n_seeds]
    verdict = {}
    if judged is not None and not judged.empty:
        verdict = {(r.prompt_id, r.seed): r.correct for r in judged.itertuples()}
    text = dict(zip(rows["prompt_id"], rows["prompt"]))
    by_key = {(r.prompt_id, int(r.seed)): r for r in rows.itertuples()}
    fig, axes = plt.subplots(len(prompt_ids), len(seeds), squeeze=False,
                             figsize=(1.1 * len(seeds) + 2.2, 1.1 * len(prompt_ids) + 0.4))
    for i, pid in enumerate(prompt_ids):
        for j, seed in enumerate(seeds):
            ax = axes[i, j]
            _cell(ax, run, by_key.get((pid, int(seed))), verdict.get((pid, seed)))
            if i == 0:
                ax.set_title(f"seed {seed}", fontsize=8)
            if j == 0:
                ax.set_ylabel("\n".join(textwrap.wrap(text.get(pid, pid), 22)), fontsize=7,
                              rotation=0, ha="right", va="center")
    fig.suptitle(f"{stage}: prompts × seeds", fontsize=10)
    fig.tight_layout()
    return fig


def _cell(ax, run, row, ok) -> None:
    """One image of a grid (its ledger row, or None for an empty cell) framed green/red by its verdict."""
    if row is not None:  # checked against its ledger hash: a damaged file is named, not drawn
        ax.imshow(np.asarray(run.read_image(row)), interpolation="nearest")
    if ok is not None and not pd.isna(ok):
        for side in ax.spines.values():
            side.set_edgecolor("tab:green" if ok else "tab:red")
            side.set_linewidth(3)
    ax.set_xticks([])
    ax.set_yticks([])


def arm_grid(run, stages: dict[str, str], prompt_id: str, seeds: list[int] | None = None,
             judged: dict[str, pd.DataFrame] | None = None, n_seeds: int = 6):
    """One prompt: rows are arms ({label: stage}), columns seeds (default: the first `n_seeds` of the first
    stage), so every arm is seen on the same seeds; green/red frames from each arm's judged rows."""
    rows = {label: run.ledger.images(stage) for label, stage in stages.items()}
    rows = {label: df[df["prompt_id"] == prompt_id] for label, df in rows.items()}
    first = next(iter(rows.values()))
    if first.empty:
        raise ValueError(f"stage {next(iter(stages.values()))!r} has no images of prompt {prompt_id!r}")
    seeds = seeds or sorted(first["seed"].unique())[:n_seeds]
    fig, axes = plt.subplots(len(stages), len(seeds), squeeze=False,
                             figsize=(1.1 * len(seeds) + 1.8, 1.1 * len(stages) + 0.6))
    for i, (label, df) in enumerate(rows.items()):
        by_seed = {int(r.seed): r for r in df.itertuples()}
        verdict = {}
        if judged and label in judged:
            j = judged[label]
            verdict = {int(r.seed): r.correct for r in j[j["prompt_id"] == prompt_id].itertuples()}
        for k, seed in enumerate(seeds):
            _cell(axes[i, k], run, by_seed.get(int(seed)), verdict.get(int(seed)))
            if i == 0:
                axes[i, k].set_title(f"seed {seed}", fontsize=8)
        axes[i, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle("\n".join(textwrap.wrap(first["prompt"].iloc[0], 60)), fontsize=9)
    fig.tight_layout()
    return fig


def count_confusion(judged: pd.DataFrame):
    """Heatmap of judged count against the count asked for (counting prompts only)."""
    df = judged[judged["kind"] == "count"].copy()
    if df.empty:
        raise ValueError("no judged counting prompts to plot")
    df["asked"] = df["target"].astype(int)
    df["judged"] = pd.to_numeric(df["parsed_answer"], errors="coerce")
    unknown = df["judged"].isna()
    top = int(max(df["asked"].max(), df["judged"].max(skipna=True) if (~unknown).any() else 0))
    cols = list(range(0, top + 1))
    table = pd.crosstab(df["asked"], df["judged"].fillna(-1).astype(int)).reindex(columns=[-1] + cols,
                                                                                  fill_value=0)
    frac = table.div(table.sum(axis=1), axis=0)
    fig, ax = plt.subplots(figsize=(0.45 * len(table.columns) + 2, 0.45 * len(table) + 1.5))
    im = ax.imshow(frac.values, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(table.columns)), ["?"] + [str(c) for c in cols])
    ax.set_yticks(range(len(table)), [str(i) for i in table.index])
    ax.set_xlabel("judged count (? = no answer)")
    ax.set_ylabel("count in prompt")
    for (i, j), v in np.ndenumerate(table.values):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if frac.values[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.04, label="fraction of images")
    ax.set_title("judged count vs asked count")
    fig.tight_layout()
    return fig


def ground_truth_grid(prompts: list, n: int = 12, size: int = 64, cols: int = 6):
    """Mini-world renders of what each prompt asks for (exact ground truth, not model output)."""
    from ..miniworld import render_count, render_relation
    from ..miniworld.vocab import DEFAULT_BACKGROUND

    step = max(1, len(prompts) // n)  # spread over the list so every kind shows
    chosen = prompts[::step][:n]
    rows = (len(chosen) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(1.6 * cols, 1.9 * rows))
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, p) in enumerate(zip(axes.flat, chosen)):
        if p.kind == "count":
            scene = render_count(p.obj.name, p.count, p.background, seed=i, size=size)
        else:
            scene = render_relation(p.obj.name, p.relation, p.obj_b.name, DEFAULT_BACKGROUND, seed=i, size=size)
        ax.imshow(np.asarray(scene.image), interpolation="nearest")
        ax.set_title("\n".join(textwrap.wrap(p.text, 20)), fontsize=7)
    fig.tight_layout()
    return fig


def caption_grid(run, table: pd.DataFrame, n: int = 12, cols: int = 6):
    """Rectified dataset examples: each image with the prompt it was made for and the caption it trains
    with (None when nothing was rectified)."""
    rows = table[table["status"] == "rectified"].head(n)
    if rows.empty:
        return None
    n_rows = -(-len(rows) // cols)
    fig, axes = plt.subplots(n_rows, cols, squeeze=False, figsize=(1.9 * cols, 2.2 * n_rows))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in zip(axes.ravel(), rows.itertuples()):
        ax.imshow(np.asarray(run.read_image(r)), interpolation="nearest")
        ax.set_title("\n".join(textwrap.wrap(f"asked: {r.prompt}", 24) + textwrap.wrap(f"now: {r.text}", 24)),
                     fontsize=6)
    fig.tight_layout()
    return fig
