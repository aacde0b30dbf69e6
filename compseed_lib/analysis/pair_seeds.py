"""Is a seed good for a relation, or for an ordered pair of objects? Per-seed correctness correlated
between spatial prompts, grouped by how the two prompts are related.

Two spatial prompts of a run are one of:
  mirror    same relation, objects swapped      ("a ball left of a star" / "a star left of a ball")
  opposite  same objects, opposite relation     ("a ball left of a star" / "a ball right of a star")
  shared    same relation, one object in common
  other     same relation, no object in common
If a model ignores the relation word and the seed decides where each *kind* lands, mirror and opposite
pairs correlate strongly negatively (one is right exactly when the other is wrong) and the rest near zero;
a seed that is "good for left" is then not a thing, and split-half reliability per relation comes out
negative whenever mirror prompts fall in different halves. If the model follows the relation, every
pair type sits near zero (or above, for seeds good at drawing both objects).

Inputs: judged rows (prompt_id, seed, correct) and the run's prompt table (prompt_id, kind, relation, obj, obj_b).
Outputs: one row per prompt pair (type, r over seeds) and a summary per type (mean r, pairs).

Usage:
    pairs = pair_seeds.pair_correlations(judged, run.load_table('prompts'))
    summary = pair_seeds.summarize(pairs)
    fig = pair_seeds.plot_pair_types(pairs)
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
TYPES = ["mirror", "opposite", "shared", "other"]


def pair_type(a: tuple[str, str, str], b: tuple[str, str, str]) -> str | None:
    """How two (relation, object, object_b) prompts relate, or None when they share nothing comparable."""
    (ra, xa, ya), (rb, xb, yb) = a, b
    if ra == rb and (xa, ya) == (yb, xb):
        return "mirror"
    if OPPOSITE.get(ra) == rb and (xa, ya) == (xb, yb):
        return "opposite"
    if ra == rb:
        return "shared" if {xa, ya} & {xb, yb} else "other"
    return None


def _spatial(prompts: pd.DataFrame) -> dict[str, tuple[str, str, str]]:
    rows = prompts[(prompts["kind"] == "spatial") & prompts["relation"].isin(list(OPPOSITE))]
    return {r.prompt_id: (r.relation, r.obj, r.obj_b) for r in rows.itertuples(index=False)}


def pair_correlations(judged: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
    """Pearson r over seeds of per-seed correctness, for every comparable pair of spatial prompts
    (`prompts`: the run's prompt table, as `prompts.prompt_table` writes it)."""
    spatial = _spatial(prompts)
    rows = judged[judged["prompt_id"].isin(spatial)].dropna(subset=["correct"])
    cols = ["prompt_a", "prompt_b", "type", "relation_a", "relation_b", "seeds", "r"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    wide = rows.assign(correct=rows["correct"].astype(float)).pivot_table(
        index="seed", columns="prompt_id", values="correct")  # (seeds, prompts)
    out = []
    for a, b in itertools.combinations(sorted(wide.columns), 2):
        kind = pair_type(spatial[a], spatial[b])
        if kind is None:
            continue
        both = wide[[a, b]].dropna()
        const = both.std().fillna(0).eq(0).any()
        r = np.nan if len(both) < 3 or const else float(np.corrcoef(both[a], both[b])[0, 1])
        out.append((a, b, kind, spatial[a][0], spatial[b][0], len(both), r))
    return pd.DataFrame(out, columns=cols)


def summarize(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per pair type: number of pairs with r defined, mean and median r, and the range."""
    g = pairs.dropna(subset=["r"]).groupby("type")["r"]
    table = pd.DataFrame({"pairs": g.size(), "mean_r": g.mean(), "median_r": g.median(), "min_r": g.min(),
                          "max_r": g.max()})
    return table.reindex([t for t in TYPES if t in table.index])


def plot_pair_types(pairs: pd.DataFrame, ax=None):
    """Strip plot of the per-pair correlations by pair type."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.2))
    rng = np.random.default_rng(0)
    types = [t for t in TYPES if t in set(pairs["type"])]
    for i, t in enumerate(types):
        r = pairs.loc[pairs["type"] == t, "r"].dropna().to_numpy()
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(r)), r, s=12, alpha=0.6)
        if len(r):
            ax.hlines(r.mean(), i - 0.3, i + 0.3, color="k")
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(types)), types)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("r of per-seed correctness")
    ax.set_title("Do two spatial prompts succeed on the same seeds?")
    ax.figure.tight_layout()
    return ax.figure
