"""Statistics the kit reports: intervals for proportions and paired tests between arms.

One home for each formula, so every table agrees (a claim is a measurement with its interval):
- `wilson_interval(k, n)`: Wilson score interval; n = 0 gives (0, 1), "nothing known".
- `mcnemar(a, b)`: exact McNemar test (two-sided binomial on the discordant pairs) for two arms judged
  on the same (prompt, seed) pairs.
- `paired_bootstrap(a, b, groups)`: difference in accuracy between two arms with a 95% interval,
  resampling whole groups (prompts) so pairs stay together.
- `group_bootstrap(num, den, strata)`: a ratio of per-group sums (e.g. correct images / images, per
  prompt), averaged over strata (tasks), with a percentile interval from resampling groups within each
  stratum — the benchmarks' metrics (GenEval's mean over tasks, VISOR_cond = correct / both found).

Inputs: counts, or boolean arrays aligned pair by pair (NA = unknown answers are dropped pairwise).
Outputs: floats and small dicts; nothing is printed.

Usage:
    lo, hi = wilson_interval(7, 10)
    mcnemar(base_correct, tuned_correct)            # {'n_pairs', 'b_only', 'a_only', 'p'}
    paired_bootstrap(base, tuned, groups=prompt_ids, n=2000, seed=0)   # {'diff', 'lo', 'hi', ...}
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import stats as _st


def wilson_interval(k, n, alpha: float = 0.05):
    """Wilson score interval for k successes in n trials; vectorised, n=0 gives (0, 1)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    k_arr, n_arr = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    if np.any(n_arr < 0) or np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k!r}, n={n!r}")
    z = _st.norm.ppf(1 - alpha / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k_arr / n_arr
        denom = 1 + z**2 / n_arr
        center = (p + z**2 / (2 * n_arr)) / denom
        half = z * np.sqrt(p * (1 - p) / n_arr + z**2 / (4 * n_arr**2)) / denom
    empty = n_arr == 0
    lo = np.where(empty, 0.0, np.clip(center - half, 0.0, 1.0))
    hi = np.where(empty, 1.0, np.clip(center + half, 0.0, 1.0))
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def _paired(a, b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean arrays of equal length with the pairs where either is NA (unknown) dropped."""
    a = np.asarray(a, dtype=object)
    b = np.asarray(b, dtype=object)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired arrays must be 1-D and of equal length, got {a.shape} and {b.shape}")
    known = np.array([x is not None and x == x and y is not None and y == y for x, y in zip(a, b)], dtype=bool)
    return a[known].astype(bool), b[known].astype(bool), known


def mcnemar(a, b) -> dict:
    """Exact McNemar test of arms a and b on the same pairs: two-sided binomial p on the discordant pairs."""
    x, y, _ = _paired(a, b)
    a_only, b_only = int(np.sum(x & ~y)), int(np.sum(~x & y))
    n = a_only + b_only
    p = 1.0 if n == 0 else float(_st.binomtest(b_only, n, 0.5).pvalue)
    return {"n_pairs": int(len(x)), "a_only": a_only, "b_only": b_only, "p": p}


def paired_bootstrap(a, b, groups=None, n: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Accuracy of b minus accuracy of a with a percentile interval, resampling groups (e.g. prompts)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    x, y, known = _paired(a, b)
    g = np.arange(len(known)) if groups is None else np.asarray(groups, dtype=object)
    if len(g) != len(known):
        raise ValueError(f"groups must align with the pairs ({len(g)} vs {len(known)})")
    g = g[known]
    if len(x) == 0:
        return {"diff": float("nan"), "lo": float("nan"), "hi": float("nan"), "n_pairs": 0, "n_groups": 0}
    labels, inverse = np.unique(g.astype(str), return_inverse=True)
    sum_a = np.bincount(inverse, weights=x.astype(float), minlength=len(labels))
    sum_b = np.bincount(inverse, weights=y.astype(float), minlength=len(labels))
    size = np.bincount(inverse, minlength=len(labels)).astype(float)
    draws = np.random.default_rng(seed).integers(0, len(labels), size=(n, len(labels)))
    weights = np.stack([np.bincount(d, minlength=len(labels)) for d in draws])
    diffs = (weights @ sum_b - weights @ sum_a) / (weights @ size)
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return {"diff": float(y.mean() - x.mean()), "lo": float(lo), "hi": float(hi), "n_pairs": int(len(x)),
            "n_groups": int(len(labels))}


def group_bootstrap(num, den, strata=None, n: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """mean over strata of sum(num) / sum(den), one entry per group, with a percentile interval from
    resampling groups within each stratum; {'value', 'lo', 'hi', 'n_groups'} (NaN when a stratum has no
    denominator)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"num and den must be 1-D and of equal length, got {num.shape} and {den.shape}")
    st = np.zeros(len(num), dtype=int) if strata is None else np.unique(np.asarray(strata, dtype=str),
                                                                          return_inverse=True)[1]
    if len(st) != len(num):
        raise ValueError(f"strata must align with the groups ({len(st)} vs {len(num)})")
    if len(num) == 0:
        return {"value": float("nan"), "lo": float("nan"), "hi": float("nan"), "n_groups": 0}
    rng = np.random.default_rng(seed)
    point, draws = [], []
    for s in np.unique(st):
        x, d = num[st == s], den[st == s]
        with np.errstate(divide="ignore", invalid="ignore"):
            point.append(x.sum() / d.sum() if d.sum() else np.nan)
            w = np.stack([np.bincount(rng.integers(0, len(x), len(x)), minlength=len(x)) for _ in range(n)])
            wd = w @ d
            draws.append(np.where(wd > 0, (w @ x) / np.where(wd > 0, wd, 1), np.nan))
    value = float(np.mean(point))
    with warnings.catch_warnings():  # a resample whose strata all lack a denominator is NaN, and dropped
        warnings.simplefilter("ignore", RuntimeWarning)
        boot = np.nanmean(np.stack(draws), axis=0) if np.isfinite(value) else np.full(n, np.nan)
    lo, hi = (np.nanquantile(boot, [alpha / 2, 1 - alpha / 2]) if np.isfinite(boot).any() else (np.nan, np.nan))
    return {"value": value, "lo": float(lo), "hi": float(hi), "n_groups": int(len(num))}
