"""Figures for seed mining: per-seed accuracy, per-category accuracy, split-half reliability.

Inputs: ``acc_df`` from :func:`compseed_lib.mining.seed_accuracy` (columns category, seed, n, correct,
accuracy, lo, hi), or the judged DataFrame itself for :func:`plot_split_half`.
Outputs: matplotlib Figures (never shown here; notebooks display them, Run.save_figure stores them).

Usage:
    acc = seed_accuracy(judged)
    fig = plot_seed_accuracy(acc, category="count=3")
    fig = plot_category_accuracy(acc)
    fig = plot_split_half(judged, "count=3")
"""
from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from compseed_lib.mining import ALL, half_accuracies, split_half_reliability, wilson_interval


def _natural(s: str) -> list:
    """Sort key that orders 'count=10' after 'count=9'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(s))]


def _one_category(acc_df: pd.DataFrame, category: str | None) -> tuple[str, pd.DataFrame]:
    """Rows of one category; with category=None and several present, pool n/correct per seed."""
    cats = sorted(acc_df["category"].unique(), key=_natural)
    if category is not None:
        if category not in cats:
            raise ValueError(f"category {category!r} not in acc_df; have {cats}")
        return category, acc_df[acc_df["category"] == category]
    if len(cats) == 1:
        return cats[0], acc_df
    pooled = acc_df.groupby("seed", as_index=False)[["n", "correct"]].sum()
    n, k = pooled["n"].to_numpy(), pooled["correct"].to_numpy()
    pooled["accuracy"] = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    pooled["lo"], pooled["hi"] = wilson_interval(k, n)
    return "all categories (pooled)", pooled


def plot_seed_accuracy(acc_df: pd.DataFrame, category: str | None = None, ax=None):
    """Per-seed accuracy with 95% Wilson error bars, seeds sorted by accuracy, dashed line at the mean."""
    label, sub = _one_category(acc_df, category)
    sub = sub[sub["n"] > 0].sort_values(["accuracy", "lo", "seed"], ascending=[True, True, False],
                                        kind="mergesort")
    if sub.empty:
        raise ValueError(f"no judged seeds to plot for {label!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(min(max(6.0, 0.14 * len(sub) + 1.5), 18.0), 3.6))
    x = np.arange(len(sub))
    acc = sub["accuracy"].to_numpy()
    # clip: float noise can put a Wilson bound a hair past the estimate at 0 or 1
    yerr = np.clip(np.vstack([acc - sub["lo"].to_numpy(), sub["hi"].to_numpy() - acc]), 0, None)
    ax.errorbar(x, acc, yerr=yerr, fmt="o", ms=3, lw=0.8, capsize=1.5, color="tab:blue")
    mean = float(np.mean(acc))
    ax.axhline(mean, ls="--", color="tab:gray", lw=1, label=f"mean over seeds {mean:.2f}")
    step = max(1, int(np.ceil(len(sub) / 40)))
    ax.set_xticks(x[::step], [str(int(s)) for s in sub["seed"].to_numpy()[::step]], rotation=90, fontsize=7)
    ax.set_xlim(-0.8, len(sub) - 0.2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("seed (sorted by accuracy)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{label}: per-seed accuracy, 95% Wilson intervals ({len(sub)} seeds)", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.figure.tight_layout()
    return ax.figure


def plot_category_accuracy(acc_df: pd.DataFrame, ax=None):
    """Per-category mean of per-seed accuracy, error bars a 95% t-interval across seeds."""
    sub = acc_df[acc_df["n"] > 0]
    if sub.empty:
        raise ValueError("acc_df has no judged seeds")
    cats = sorted(sub["category"].unique(), key=_natural)
    means, errs, counts = [], [], []
    for c in cats:
        a = sub.loc[sub["category"] == c, "accuracy"].to_numpy(dtype=float)
        means.append(a.mean())
        counts.append(len(a))
        errs.append(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else 0.0)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(cats) + 1.5), 3.4))
    x = np.arange(len(cats))
    ax.bar(x, means, yerr=errs, capsize=3, color="tab:blue", alpha=0.8)
    for xi, m, c in zip(x, means, counts, strict=True):
        ax.text(xi, min(m + 0.03, 0.97), f"{m:.2f}\n{c} seeds", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, cats, rotation=30 if len(cats) > 6 else 0)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("mean accuracy over seeds")
    ax.set_title("accuracy per category (95% CI across seeds)", fontsize=10)
    ax.figure.tight_layout()
    return ax.figure


def plot_split_half(df: pd.DataFrame, category: str, n_permutations: int = 2000, seed: int = 0, ax=None):
    """Scatter of per-seed accuracy on prompt half A vs half B, with split-half r and p in the title."""
    pair = half_accuracies(df, category, seed)
    sub = df if category == ALL else df[df["category"].astype(str) == category]
    rel = split_half_reliability(sub, n_permutations, seed, by_category=category != ALL).iloc[0]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], ls=":", color="tab:gray", lw=1)
    ax.scatter(pair["acc_a"], pair["acc_b"], s=18, alpha=0.6, color="tab:blue")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_aspect("equal")
    ax.set_xlabel(f"accuracy on half A ({int(rel['n_prompts_a'])} prompts)")
    ax.set_ylabel(f"accuracy on half B ({int(rel['n_prompts_b'])} prompts)")
    stat = (f"r undefined ({rel['note']})" if pd.isna(rel["r"])
            else f"r={rel['r']:.2f}, p={rel['p']:.3g}")
    ax.set_title(f"{category}: split-half {stat}, {int(rel['n_seeds'])} seeds", fontsize=9)
    ax.figure.tight_layout()
    return ax.figure


def plot_loss_curves(histories: dict[str, list]):
    """Training loss against step, one line per run (history rows: [step, loss, seconds, ...])."""
    fig, ax = plt.subplots(figsize=(5, 3))
    for name, hist in histories.items():
        if hist:
            ax.plot([h[0] for h in hist], [h[1] for h in hist], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("fine-tuning loss", fontsize=9)
    fig.tight_layout()
    return fig


def plot_seed_category_heatmap(acc_df: pd.DataFrame, max_seeds: int = 64, ax=None):
    """Per-seed x per-category accuracy as a heatmap (seeds sorted by their mean over categories, best
    first; at most `max_seeds` columns, best and worst halves kept)."""
    sub = acc_df[acc_df["n"] > 0]
    if sub.empty:
        raise ValueError("acc_df has no judged seeds")
    table = sub.pivot_table(index="category", columns="seed", values="accuracy")
    table = table.loc[sorted(table.index, key=_natural)]
    order = table.mean().sort_values(ascending=False, kind="mergesort").index
    if len(order) > max_seeds:
        order = order[:max_seeds // 2].append(order[-(max_seeds - max_seeds // 2):])
    table = table[order]
    if ax is None:
        _, ax = plt.subplots(figsize=(min(18.0, 0.22 * table.shape[1] + 2.5), 0.35 * table.shape[0] + 1.6))
    im = ax.imshow(table.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_yticks(range(table.shape[0]), table.index, fontsize=8)
    step = max(1, int(np.ceil(table.shape[1] / 40)))
    ax.set_xticks(range(0, table.shape[1], step), [str(int(s)) for s in table.columns[::step]], rotation=90,
                  fontsize=7)
    ax.set_xlabel("seed (best mean accuracy first)")
    ax.figure.colorbar(im, ax=ax, fraction=0.03, label="accuracy")
    ax.set_title(f"accuracy per seed and category ({table.shape[1]} seeds)", fontsize=10)
    ax.figure.tight_layout()
    return ax.figure


def plot_object_accuracy(judged: pd.DataFrame, prompts: list, ax=None):
    """Accuracy per object kind (its prompts' judged images; unknown answers left out), with 95% Wilson
    intervals, counting and spatial prompts side by side (a spatial prompt counts for object A)."""
    by_id = {p.id: p for p in prompts}
    df = judged[judged["correct"].notna() & judged["prompt_id"].isin(list(by_id))].copy()
    if df.empty:
        raise ValueError("no judged images of the given prompts")
    df["object"] = [by_id[i].obj.name for i in df["prompt_id"]]
    df["kind"] = [by_id[i].kind for i in df["prompt_id"]]
    df["correct"] = df["correct"].astype(bool)
    g = df.groupby(["object", "kind"])["correct"].agg(["sum", "count"]).reset_index()
    objects = sorted(g["object"].unique())
    kinds = sorted(g["kind"].unique())
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.5, 0.8 * len(objects) + 1.5), 3.4))
    width = 0.8 / len(kinds)
    for j, kind in enumerate(kinds):
        rows = g[g["kind"] == kind].set_index("object").reindex(objects)
        k, n = rows["sum"].fillna(0).to_numpy(), rows["count"].fillna(0).to_numpy()
        acc = np.where(n > 0, k / np.maximum(n, 1), np.nan)
        lo, hi = wilson_interval(k.astype(int), n.astype(int))
        x = np.arange(len(objects)) + (j - (len(kinds) - 1) / 2) * width
        ax.bar(x, acc, width, label=kind, alpha=0.85,
               yerr=np.clip(np.vstack([acc - lo, hi - acc]), 0, None), capsize=2)
    ax.set_xticks(range(len(objects)), objects, rotation=30 if len(objects) > 6 else 0)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("accuracy per object kind (95% Wilson intervals)", fontsize=10)
    ax.figure.tight_layout()
    return ax.figure
