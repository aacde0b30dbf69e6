"""Scoring helpers shared by the benchmark scorers (GenEval, T2I-CompBench, VISOR): per-prompt
aggregates and one metric row with its 95% interval over prompts.

Usage:
    pp = per_prompt(df, correct="sum", images="size")
    metric_row("geneval/overall", pp["correct"], pp["images"], None, n_boot=2000, seed=0)
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..stats import group_bootstrap


def per_prompt(df: pd.DataFrame, **aggs: str) -> pd.DataFrame:
    """Per-prompt aggregates: per_prompt(df, correct='sum', images='size') (column=how; 'size' counts)."""
    g = df.groupby("prompt_id", sort=True)
    out = {}
    for col, how in aggs.items():
        out[col] = g.size() if how == "size" else g[col].agg(how)
    return pd.DataFrame(out).reset_index()


def metric_row(metric: str, num, den, strata, n_boot: int, seed: int, **extra) -> dict:
    """{metric, value, lo, hi, n_prompts, ...}: sum(num)/sum(den) (averaged over strata) with a 95%
    interval resampling prompts (`stats.group_bootstrap`)."""
    b = group_bootstrap(np.asarray(num, float), np.asarray(den, float), strata, n=n_boot, seed=seed)
    return {"metric": metric, "value": b["value"], "lo": b["lo"], "hi": b["hi"], "n_prompts": b["n_groups"],
            **{k: int(v) for k, v in extra.items()}}
