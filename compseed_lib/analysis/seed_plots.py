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
