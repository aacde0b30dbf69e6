"""Seed mining statistics: per-seed accuracy, ranking, and a test of whether "good seeds" are real.

Inputs: a judged DataFrame, one row per judged image, with at least the columns ``seed`` (int),
``prompt_id`` (str; compared as str throughout), ``category`` (str: 'count=3', 'left', ...) and
``correct`` (bool). Rows whose ``correct`` is NA (None / NaN / pd.NA: the judge gave no usable answer)
are **dropped and counted, never scored as wrong**: an unanswered question says nothing about the image,
and scoring it wrong would charge the judge's failures to the seed. The count is logged (warning) and
reported per (category, seed) as ``n_unjudged`` by :func:`seed_accuracy`.

Outputs: DataFrames (a dict of them from :func:`reliability_report`) and plain-English sentences from
:func:`summarize_reliability`. Nothing is printed; ``logging`` only.

Honesty rule: that some seeds are reliably better is tested, not assumed.
- :func:`split_half_reliability`: per-seed accuracy on two disjoint halves of each category's prompts,
  Pearson and Spearman r, one-sided permutation p-value (seed labels of half B shuffled).
- :func:`topk_transfer`: top-k seeds chosen on one prompt set, scored on a disjoint one, against the
  mean of all seeds and against random k-subsets of seeds.
Halves are drawn per category with :func:`split_prompts` (so ``split_prompts(ids_of_category, seed)``
reproduces them). All randomness comes from ``numpy.random.default_rng``; the permutation/random-subset
stream of a category is keyed by (seed, crc32(category)), so its result does not depend on which other
categories are present. p-values use (count + 1) / (n + 1), so they are never 0.

Usage:
    acc = seed_accuracy(judged)                  # category x seed, Wilson 95% intervals
    best = top_seeds(judged, n=3)                # paper: 3 seeds per count
    rep = reliability_report(judged, k=3)   # seed_accuracy, top_seeds, split_half, transfer, summary
    for sentence in summarize_reliability(rep).values(): log.info(sentence)
    held = topk_transfer(judged, k=3, select_ids=train_ids, score_ids=eval_ids)
"""
from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd
from scipy import stats

from .stats import wilson_interval

log = logging.getLogger(__name__)

REQUIRED = ("seed", "prompt_id", "category", "correct")
ALL = "all"
_EPS = 1e-12  # float tolerance for ">=" comparisons against the observed statistic
_BOOL = {True: True, False: False}  # 1/0 and numpy bools hash equal to these


def _prepare(df: pd.DataFrame, by_category: bool) -> pd.DataFrame:
    """Validate columns; return rows with bool ``correct`` (False where unjudged) and bool ``unjudged``."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a judged pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"judged DataFrame lacks column(s) {missing}; it has {list(df.columns)}")
    if df["seed"].isna().any():
        raise ValueError(f"column 'seed' has {int(df['seed'].isna().sum())} missing value(s)")
    col = df["correct"]
    na = col.isna().to_numpy(dtype=bool)
    correct = np.zeros(len(df), dtype=bool)
    if pd.api.types.is_bool_dtype(col.dtype):  # bool or nullable "boolean": no value check needed
        correct[~na] = col[~na].to_numpy(dtype=bool)
    else:
        raw = col.to_numpy(dtype=object)[~na]
        values = [_BOOL.get(v) for v in raw]
        bad = [v for v, m in zip(raw, values, strict=True) if m is None]
        if bad:
            raise ValueError(f"column 'correct' must hold bools (or NA for unjudged); bad values: {bad[:5]}")
        correct[~na] = np.asarray(values, dtype=bool)
    if na.any():
        log.warning("dropping %d of %d judgements with no usable answer (correct is NA); they are "
                    "counted as n_unjudged, not scored as wrong", int(na.sum()), len(df))
    return pd.DataFrame({
        "category": ALL if not by_category else df["category"].astype(str).to_numpy(),
        "seed": df["seed"].astype(np.int64).to_numpy(),
        "prompt_id": df["prompt_id"].astype(str).to_numpy(),
        "correct": correct,
        "unjudged": na,
    })


def _groups(d: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """Yield (category, rows) in sorted category order."""
    for cat, sub in d.groupby("category", sort=True):
        yield str(cat), sub


def _rng(seed: int, category: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(category.encode())])


def seed_accuracy(df: pd.DataFrame, by_category: bool = True, alpha: float = 0.05) -> pd.DataFrame:
    """Per (category, seed): n judged, n correct, accuracy, Wilson [lo, hi], n_unjudged; sorted."""
    d = _prepare(df, by_category)
    d["judged"] = ~d["unjudged"]
    res = (d.groupby(["category", "seed"], sort=True)
           .agg(n=("judged", "sum"), correct=("correct", "sum"), n_unjudged=("unjudged", "sum"))
           .reset_index())
    res[["n", "correct", "n_unjudged"]] = res[["n", "correct", "n_unjudged"]].astype(np.int64)
    n, k = res["n"].to_numpy(), res["correct"].to_numpy()
    res["accuracy"] = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    res["lo"], res["hi"] = wilson_interval(k, n, alpha)
    cols = ["category", "seed", "n", "correct", "accuracy", "lo", "hi", "n_unjudged"]
    return res[cols].sort_values(["category", "seed"], kind="mergesort").reset_index(drop=True)


def category_accuracy(df: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per category (and 'all'): images, answers judged, unknown answers left out, accuracy, Wilson [lo, hi]."""
    d = _prepare(df, by_category=True)
    d = pd.concat([d, d.assign(category=ALL)], ignore_index=True)
    d["judged"] = ~d["unjudged"]
    res = (d.groupby("category", sort=True)
           .agg(images=("seed", "size"), n=("judged", "sum"), correct=("correct", "sum"),
                n_unknown=("unjudged", "sum")).reset_index())
    res["accuracy"] = np.where(res["n"] > 0, res["correct"] / res["n"].clip(lower=1), np.nan)
    res["lo"], res["hi"] = wilson_interval(res["correct"].to_numpy(), res["n"].to_numpy(), alpha)
    return res[["category", "images", "n", "n_unknown", "correct", "accuracy", "lo", "hi"]]


def _ranked(acc: pd.DataFrame) -> pd.DataFrame:
    """Sort by category, then accuracy desc, Wilson lower bound desc, seed asc (deterministic)."""
    return acc.sort_values(["category", "accuracy", "lo", "seed"], ascending=[True, False, False, True],
                           kind="mergesort", na_position="last")


def top_seeds(df: pd.DataFrame, n: int = 3, by_category: bool = True, min_trials: int = 1,
              alpha: float = 0.05) -> pd.DataFrame:
    """Top-n seeds per category by accuracy (ties: higher Wilson lower bound, then lower seed)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    acc = seed_accuracy(df, by_category, alpha)
    acc = acc[acc["n"] >= max(int(min_trials), 1)]
    ranked = _ranked(acc).copy()
    ranked["rank"] = ranked.groupby("category").cumcount() + 1
    return ranked[ranked["rank"] <= n].reset_index(drop=True)


def split_prompts(prompt_ids: Iterable, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic random split of the unique prompt ids (as str, sorted first) into halves A, B."""
    ids = sorted({str(p) for p in prompt_ids})
    if len(ids) < 2:
        raise ValueError(f"need at least 2 distinct prompt ids to split, got {ids}")
    perm = np.random.default_rng(seed).permutation(len(ids))
    cut = (len(ids) + 1) // 2
    return sorted(ids[i] for i in perm[:cut]), sorted(ids[i] for i in perm[cut:])


def _paired(sub: pd.DataFrame, ids_a: Iterable[str], ids_b: Iterable[str]) -> pd.DataFrame:
    """Per seed judged in both prompt sets: n_a, k_a, acc_a, n_b, k_b, acc_b (index: seed)."""
    out = []
    for ids, tag in ((set(ids_a), "a"), (set(ids_b), "b")):
        rows = sub[sub["prompt_id"].isin(ids) & ~sub["unjudged"]]
        g = rows.groupby("seed", sort=True)["correct"].agg(["size", "sum"])
        g.columns = [f"n_{tag}", f"k_{tag}"]
        g[f"acc_{tag}"] = g[f"k_{tag}"] / g[f"n_{tag}"]
        out.append(g)
    return out[0].join(out[1], how="inner")


def half_accuracies(df: pd.DataFrame, category: str = ALL, seed: int = 0) -> pd.DataFrame:
    """Per-seed accuracy on prompt halves A and B of one category ('all' pools every category)."""
    d = _prepare(df, by_category=category != ALL)
    sub = d[d["category"] == category]
    if sub.empty:
        raise ValueError(f"no rows for category {category!r}; have {sorted(d['category'].unique())}")
    a, b = split_prompts(sub["prompt_id"].unique(), seed)
    return _paired(sub, a, b).reset_index()


def _perm_r(a: np.ndarray, b: np.ndarray, n_perm: int, rng: np.random.Generator) -> tuple[float, float]:
    """Pearson r and one-sided permutation p (shuffle b's seed labels); inputs must be non-constant."""
    za, zb = a - a.mean(), b - b.mean()
    za, zb = za / np.sqrt(za @ za), zb / np.sqrt(zb @ zb)
    r = float(za @ zb)
    idx = rng.permuted(np.tile(np.arange(len(b)), (n_perm, 1)), axis=1)
    count = int(np.count_nonzero(zb[idx] @ za >= r - _EPS))
    return r, (count + 1) / (n_perm + 1)


def split_half_reliability(df: pd.DataFrame, n_permutations: int = 2000, seed: int = 0,
                           by_category: bool = True) -> pd.DataFrame:
    """Per category: r between per-seed accuracy on disjoint prompt halves, with permutation p-value."""
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations!r}")
    rows = []
    for cat, sub in _groups(_prepare(df, by_category)):
        row = dict(category=cat, n_seeds=0, n_prompts_a=0, n_prompts_b=0, mean_acc_a=np.nan,
                   mean_acc_b=np.nan, r=np.nan, spearman=np.nan, p=np.nan,
                   n_permutations=n_permutations, n_unknown=int(sub["unjudged"].sum()), note="")
        pids = sub["prompt_id"].unique()
        if len(pids) < 2:
            rows.append(row | dict(note=f"only {len(pids)} prompt(s): cannot split"))
            continue
        ids_a, ids_b = split_prompts(pids, seed)
        pair = _paired(sub, ids_a, ids_b)
        a, b = pair["acc_a"].to_numpy(), pair["acc_b"].to_numpy()
        row.update(n_seeds=len(pair), n_prompts_a=len(ids_a), n_prompts_b=len(ids_b))
        if len(pair):
            row.update(mean_acc_a=float(a.mean()), mean_acc_b=float(b.mean()))
        const = [h for h, x in (("A", a), ("B", b)) if len(x) and np.ptp(x) == 0]
        if len(pair) < 3:
            row["note"] = f"only {len(pair)} seed(s) judged in both halves: r undefined"
        elif const:
            row["note"] = f"constant per-seed accuracy in half {' and '.join(const)}: r undefined"
        else:
            row["r"], row["p"] = _perm_r(a, b, n_permutations, _rng(seed, cat))
            row["spearman"] = float(stats.spearmanr(a, b).statistic)
        if row["note"]:
            log.info("split-half %s: %s", cat, row["note"])
        rows.append(row)
    return pd.DataFrame(rows)


def _select_score_ids(pids: list[str], seed: int, select_ids, score_ids) -> tuple[list[str], list[str]]:
    """Prompt ids (of one category) to choose seeds on and to score them on."""
    if select_ids is None and score_ids is None:
        return split_prompts(pids, seed) if len(pids) >= 2 else (pids, [])
    sel = None if select_ids is None else {str(p) for p in select_ids}
    sco = None if score_ids is None else {str(p) for p in score_ids}
    if sel is not None and sco is not None and sel & sco:
        both = sorted(sel & sco)
        raise ValueError(f"select_ids and score_ids overlap ({len(both)} ids, e.g. {both[:3]}); "
                         "held-out scoring needs disjoint prompts")
    sel = sel if sel is not None else set(pids) - sco
    sco = sco if sco is not None else set(pids) - sel
    return sorted(set(pids) & sel), sorted(set(pids) & sco)


def topk_transfer(df: pd.DataFrame, k: int = 3, n_random: int = 2000, seed: int = 0,
                  by_category: bool = True, select_ids: Iterable | None = None,
                  score_ids: Iterable | None = None) -> pd.DataFrame:
    """Top-k seeds chosen on one prompt set, scored on a disjoint set vs all seeds and random k-subsets."""
    if k < 1 or n_random < 1:
        raise ValueError(f"k and n_random must be >= 1, got k={k!r}, n_random={n_random!r}")
    rows = []
    for cat, sub in _groups(_prepare(df, by_category)):
        ids_sel, ids_sco = _select_score_ids(sorted(sub["prompt_id"].unique()), seed, select_ids, score_ids)
        pair = _paired(sub, ids_sel, ids_sco)
        k_eff = min(k, len(pair))
        row = dict(category=cat, k=k_eff, topk_seeds="", topk_acc_select=np.nan, topk_acc_score=np.nan,
                   mean_acc_score=np.nan, random_k_acc_score=np.nan, random_k_p=np.nan,
                   gain_vs_mean=np.nan, n_seeds=len(pair), n_prompts_select=len(ids_sel),
                   n_prompts_score=len(ids_sco), n_unknown=int(sub["unjudged"].sum()), note="")
        if not ids_sel or not ids_sco or pair.empty:
            row["note"] = (f"no seeds judged on both sets ({len(ids_sel)} select / {len(ids_sco)} "
                           "score prompts)")
            rows.append(row)
            continue
        pair["lo_a"] = wilson_interval(pair["k_a"].to_numpy(), pair["n_a"].to_numpy())[0]
        ranked = pair.reset_index().sort_values(["acc_a", "lo_a", "seed"], ascending=[False, False, True],
                                                kind="mergesort")
        top = ranked.head(k_eff)
        acc_b = pair["acc_b"].to_numpy()
        top_score = float(top["acc_b"].mean())
        idx = _rng(seed, cat).random((n_random, len(pair))).argsort(axis=1)[:, :k_eff]
        rand = acc_b[idx].mean(axis=1)
        notes = []
        if k_eff < k:
            notes.append(f"only {len(pair)} seeds: k reduced to {k_eff}")
        if k_eff == len(pair):
            notes.append("top-k is every seed: comparison is empty")
        row.update(topk_seeds=",".join(str(int(s)) for s in top["seed"]),
                   topk_acc_select=float(top["acc_a"].mean()), topk_acc_score=top_score,
                   mean_acc_score=float(acc_b.mean()), random_k_acc_score=float(rand.mean()),
                   random_k_p=(int(np.count_nonzero(rand >= top_score - _EPS)) + 1) / (n_random + 1),
                   gain_vs_mean=top_score - float(acc_b.mean()), note="; ".join(notes))
        rows.append(row)
    return pd.DataFrame(rows)


def reliability_report(df: pd.DataFrame, k: int = 3, n_permutations: int = 2000, n_random: int = 2000,
                       seed: int = 0, by_category: bool = True, min_trials: int = 1,
                       select_ids: Iterable | None = None, score_ids: Iterable | None = None,
                       alpha: float = 0.05) -> dict[str, pd.DataFrame]:
    """Bundle seed_accuracy, top_seeds, split_half, transfer and a one-sentence summary per category."""
    rep = {
        "seed_accuracy": seed_accuracy(df, by_category),
        "top_seeds": top_seeds(df, n=k, by_category=by_category, min_trials=min_trials),
        "split_half": split_half_reliability(df, n_permutations, seed, by_category),
        "transfer": topk_transfer(df, k, n_random, seed, by_category, select_ids, score_ids),
    }
    text = summarize_reliability(rep, alpha=alpha)
    rep["summary"] = pd.DataFrame({"category": list(text), "summary": list(text.values())})
    return rep


def _fmt_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}" if p < 0.01 else f"p={p:.2f}"


def summarize_reliability(split_half: pd.DataFrame | dict[str, pd.DataFrame],
                          transfer: pd.DataFrame | None = None, alpha: float = 0.05) -> dict[str, str]:
    """Plain-English verdict per category from split-half (and transfer) tables, significance at alpha."""
    if isinstance(split_half, dict):
        transfer = split_half.get("transfer") if transfer is None else transfer
        split_half = split_half["split_half"]
    trans = {} if transfer is None else {r.category: r for r in transfer.itertuples(index=False)}
    out: dict[str, str] = {}
    for r in split_half.itertuples(index=False):
        halves = f"{r.n_seeds} seeds, {r.n_prompts_a}/{r.n_prompts_b} prompts per half"
        if pd.isna(r.r):
            text = f"{r.category}: split-half r undefined ({r.note}; {halves}): cannot tell whether seed " \
                   "accuracy is a stable property"
        elif r.p < alpha:
            text = f"{r.category}: split-half r={r.r:.2f} ({_fmt_p(r.p)}, {halves}): seeds differ reliably"
        else:
            text = f"{r.category}: split-half r={r.r:.2f} ({_fmt_p(r.p)}, {halves}): no evidence that " \
                   "seed accuracy is a stable property"
        t = trans.get(r.category)
        if t is not None and not pd.isna(t.topk_acc_score):
            ok = t.random_k_p < alpha and t.gain_vs_mean > 0
            text += (f"; top-{t.k} seeds chosen on {t.n_prompts_select} prompts scored "
                     f"{t.topk_acc_score:.2f} on {t.n_prompts_score} others "
                     f"vs {t.mean_acc_score:.2f} for all seeds "
                     f"(gain {t.gain_vs_mean:+.2f}, random-{t.k} {_fmt_p(t.random_k_p)}): "
                     + ("they beat random seeds" if ok else "no better than random seeds"))
        out[r.category] = text
    return out


def pooled_levels(df: pd.DataFrame) -> list[pd.DataFrame]:
    """The same judgements labelled three ways: 'all' pooled, per kind (count/spatial), per category.

    Few prompts per category make per-category statistics noisy; the pooled levels say whether the
    seed effect exists at all before it is split up."""
    out = [df.assign(category="all")]
    if "kind" in df.columns:
        out.append(df.assign(category=df["kind"].astype(str)))
    return out + [df]


def split_half_levels(df: pd.DataFrame, n_permutations: int = 2000, seed: int = 0) -> pd.DataFrame:
    """`split_half_reliability` at every level of `pooled_levels` (all, per kind, per category), one table."""
    return pd.concat([split_half_reliability(d, n_permutations=n_permutations, seed=seed)
                      for d in pooled_levels(df)], ignore_index=True)


def transfer_levels(select: pd.DataFrame, score: pd.DataFrame, k: int = 3, seed: int = 0) -> pd.DataFrame:
    """`topk_transfer` at every pooled level: top-k seeds chosen on the judgements `select` (training
    prompts), scored on `score` (held-out prompts under the same seeds); one table."""
    both = pd.concat([select, score], ignore_index=True)
    return pd.concat([topk_transfer(d, k=k, select_ids=select["prompt_id"].unique(),
                                    score_ids=score["prompt_id"].unique(), seed=seed)
                      for d in pooled_levels(both)], ignore_index=True)


def best_and_worst(df: pd.DataFrame, k: int = 3) -> tuple[list[int], list[int]]:
    """The k seeds with the highest and the k with the lowest accuracy over all prompts (best first)."""
    overall = seed_accuracy(df, by_category=False).sort_values(["accuracy", "seed"], kind="mergesort")
    return overall["seed"].tail(k).tolist()[::-1], overall["seed"].head(k).tolist()
