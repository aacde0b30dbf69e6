"""Seed-mining statistics on synthetic judged data with planted (or absent) seed effects."""
from __future__ import annotations

import logging
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from compseed_lib import mining  # noqa: E402
from compseed_lib.analysis import seed_plots  # noqa: E402


def judged(true_acc, n_prompts: int, categories=("count=3",), rng_seed: int = 0) -> pd.DataFrame:
    """One Bernoulli(true_acc[seed]) judgement per (category, prompt, seed)."""
    rng = np.random.default_rng(rng_seed)
    true_acc = np.asarray(true_acc, dtype=float)
    frames = []
    for cat in categories:
        seeds = np.tile(np.arange(len(true_acc)), n_prompts)
        prompts = np.repeat([f"{cat}-p{i:03d}" for i in range(n_prompts)], len(true_acc))
        frames.append(pd.DataFrame({"seed": seeds, "prompt_id": prompts, "category": cat,
                                    "correct": rng.random(len(seeds)) < true_acc[seeds]}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    """40 seeds with true accuracies spread over 0.1-0.9, 80 prompts (40 per half), two categories."""
    true = np.random.default_rng(1).uniform(0.1, 0.9, 40)
    return judged(true, 80, categories=("count=3", "left"), rng_seed=2)


@pytest.fixture(scope="module")
def null() -> pd.DataFrame:
    """40 seeds that are all truly 0.5 accurate."""
    return judged(np.full(40, 0.5), 80, rng_seed=3)


def test_wilson_known_value_and_vectorised():
    lo, hi = mining.wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = mining.wilson_interval(np.array([5, 0, 0, 10]), np.array([10, 0, 10, 10]))
    assert np.allclose(lo, [0.2366, 0.0, 0.0, 0.7225], atol=1e-4)
    assert np.allclose(hi, [0.7634, 1.0, 0.2775, 1.0], atol=1e-4)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        mining.wilson_interval(3, 2)


def test_seed_accuracy_columns_counts_and_order(planted):
    acc = mining.seed_accuracy(planted)
    assert list(acc.columns[:7]) == ["category", "seed", "n", "correct", "accuracy", "lo", "hi"]
    assert list(acc["category"].unique()) == ["count=3", "left"]
    assert (acc.groupby("category")["seed"].apply(lambda s: s.is_monotonic_increasing)).all()
    assert (acc["n"] == 80).all()
    assert (acc["lo"] <= acc["accuracy"]).all() and (acc["accuracy"] <= acc["hi"]).all()
    one = planted[(planted.category == "left") & (planted.seed == 7)]
    row = acc[(acc.category == "left") & (acc.seed == 7)].iloc[0]
    assert row["correct"] == one["correct"].sum() and row["accuracy"] == pytest.approx(one["correct"].mean())
    pooled = mining.seed_accuracy(planted, by_category=False)
    assert set(pooled["category"]) == {"all"} and (pooled["n"] == 160).all()


@pytest.mark.parametrize("na", [None, pd.NA, np.nan])
def test_unjudged_rows_dropped_and_counted_not_wrong(na, caplog):
    df = pd.DataFrame({"seed": [1, 1, 1, 1, 2, 2], "prompt_id": list("abcdab"), "category": "left",
                       "correct": [True, True, na, na, False, True]})
    if na is pd.NA:
        df["correct"] = df["correct"].astype("boolean")
    with caplog.at_level(logging.WARNING, logger="compseed_lib.mining"):
        acc = mining.seed_accuracy(df).set_index("seed")
    assert "dropping 2 of 6" in caplog.text
    assert acc.loc[1, "n"] == 2 and acc.loc[1, "accuracy"] == 1.0 and acc.loc[1, "n_unjudged"] == 2
    assert acc.loc[2, "n_unjudged"] == 0
    assert mining.top_seeds(df, n=1)["seed"].tolist() == [1]


def test_bad_input_named():
    with pytest.raises(ValueError, match="correct"):
        mining.seed_accuracy(pd.DataFrame({"seed": [1], "prompt_id": ["a"], "category": ["x"]}))
    with pytest.raises(ValueError, match="bad values"):
        mining.seed_accuracy(pd.DataFrame({"seed": [1], "prompt_id": ["a"], "category": ["x"],
                                           "correct": ["yes"]}))


def test_top_seeds_finds_planted_good_seeds():
    true = np.full(20, 0.3)
    true[[3, 7, 11]] = 0.95
    df = judged(true, 60, categories=("count=2", "count=4"), rng_seed=5)
    top = mining.top_seeds(df, n=3)
    for _cat, g in top.groupby("category"):
        assert set(g["seed"]) == {3, 7, 11} and g["rank"].tolist() == [1, 2, 3]


def test_top_seeds_tie_breaks_by_lower_bound_then_seed():
    rows = [(5, "a", True), (5, "b", False), (2, "a", True), (2, "b", False)]
    rows += [(9, f"p{i}", i % 2 == 0) for i in range(20)] + [(1, "a", False), (1, "b", False)]
    df = pd.DataFrame(rows, columns=["seed", "prompt_id", "correct"]).assign(category="c")
    assert mining.top_seeds(df, n=3)["seed"].tolist() == [9, 2, 5]  # all 0.5; n=20 has the higher lo
    assert mining.top_seeds(df, n=3, min_trials=3)["seed"].tolist() == [9]


def test_split_prompts_disjoint_complete_stable():
    ids = [f"p{i}" for i in range(11)]
    a, b = mining.split_prompts(ids, seed=4)
    assert not set(a) & set(b) and set(a) | set(b) == set(ids) and (len(a), len(b)) == (6, 5)
    shuffled = list(np.random.default_rng(0).permutation(ids)) + ids[:3]  # order and duplicates ignored
    assert mining.split_prompts(shuffled, seed=4) == (a, b)
    assert mining.split_prompts(ids, seed=5) != (a, b)


def test_split_half_detects_planted_seed_effect(planted):
    rel = mining.split_half_reliability(planted, n_permutations=2000, seed=0).set_index("category")
    for cat in ("count=3", "left"):
        row = rel.loc[cat]
        assert row["n_seeds"] == 40 and row["n_prompts_a"] == 40 and row["n_prompts_b"] == 40
        assert row["r"] > 0.7 and row["spearman"] > 0.6
        assert row["p"] == pytest.approx(1 / 2001) and row["note"] == ""


def test_split_half_no_effect_not_significant(null):
    row = mining.split_half_reliability(null, n_permutations=2000, seed=0).iloc[0]
    assert abs(row["r"]) < 0.4 and row["p"] > 0.05


def test_split_half_pvalue_calibrated_under_null():
    ps = [mining.split_half_reliability(judged(np.full(30, 0.4), 30, rng_seed=100 + i),
                                        n_permutations=199, seed=i)["p"].iloc[0] for i in range(30)]
    assert np.mean(np.array(ps) < 0.05) <= 0.2 and 0.3 < np.mean(ps) < 0.7


def test_split_half_deterministic_and_category_independent(planted):
    full = mining.split_half_reliability(planted, n_permutations=300, seed=7)
    again = mining.split_half_reliability(planted.sample(frac=1, random_state=0), n_permutations=300, seed=7)
    pd.testing.assert_frame_equal(full, again)
    alone = mining.split_half_reliability(planted[planted.category == "left"], n_permutations=300, seed=7)
    pd.testing.assert_frame_equal(alone, full[full.category == "left"].reset_index(drop=True))


def test_constant_accuracy_gives_nan_without_warnings():
    df = judged(np.ones(10), 8, rng_seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rel = mining.split_half_reliability(df, n_permutations=100).iloc[0]
        tr = mining.topk_transfer(df, k=3, n_random=100).iloc[0]
        text = mining.summarize_reliability(rel.to_frame().T, None)["count=3"]
    assert np.isnan(rel["r"]) and np.isnan(rel["p"]) and np.isnan(rel["spearman"])
    assert "constant" in rel["note"] and "undefined" in text
    assert tr["gain_vs_mean"] == 0 and tr["random_k_p"] == 1.0
    few = mining.split_half_reliability(judged([0.5, 0.6], 8), n_permutations=10).iloc[0]
    assert np.isnan(few["r"]) and "2 seed" in few["note"]


def test_topk_transfer_planted_beats_random(planted):
    tr = mining.topk_transfer(planted, k=3, n_random=2000, seed=0).set_index("category")
    true = np.random.default_rng(1).uniform(0.1, 0.9, 40)
    best = set(np.argsort(true)[-8:])
    for cat in ("count=3", "left"):
        row = tr.loc[cat]
        seeds = [int(s) for s in row["topk_seeds"].split(",")]
        assert row["k"] == 3 and len(seeds) == 3 and set(seeds) <= best
        assert row["gain_vs_mean"] > 0.2 and row["random_k_p"] < 0.01
        assert row["topk_acc_score"] > row["random_k_acc_score"]
        assert row["random_k_acc_score"] == pytest.approx(row["mean_acc_score"], abs=0.02)


def test_topk_transfer_null_not_significant(null):
    row = mining.topk_transfer(null, k=3, n_random=2000, seed=0).iloc[0]
    assert row["random_k_p"] > 0.05 and row["topk_acc_select"] > row["topk_acc_score"]  # winner's curse


def test_topk_transfer_explicit_ids(planted):
    ids = sorted(planted["prompt_id"].unique())
    train = [i for i in ids if int(i[-3:]) < 60]
    held = [i for i in ids if int(i[-3:]) >= 60]
    tr = mining.topk_transfer(planted, k=2, n_random=200, select_ids=train, score_ids=held)
    assert (tr["n_prompts_select"] == 60).all() and (tr["n_prompts_score"] == 20).all()
    only_sel = mining.topk_transfer(planted, k=2, n_random=200, select_ids=train)
    pd.testing.assert_frame_equal(tr, only_sel)
    with pytest.raises(ValueError, match="overlap"):
        mining.topk_transfer(planted, select_ids=train, score_ids=held + train[:1])
    big = mining.topk_transfer(judged(np.linspace(0.2, 0.8, 4), 10), k=5, n_random=50).iloc[0]
    assert big["k"] == 4 and "reduced" in big["note"]


def test_report_and_summary_wording(planted, null):
    rep = mining.reliability_report(planted, k=3, n_permutations=500, n_random=500)
    assert set(rep) == {"seed_accuracy", "top_seeds", "split_half", "transfer", "summary"}
    assert len(rep["top_seeds"]) == 6 and list(rep["summary"]["category"]) == ["count=3", "left"]
    text = mining.summarize_reliability(rep)
    assert "seeds differ reliably" in text["left"] and "p=0.002" in text["left"]  # floor 1/501
    assert "they beat random seeds" in text["left"]
    neg = mining.summarize_reliability(mining.reliability_report(null, n_permutations=500, n_random=500))
    assert "no evidence that seed accuracy is a stable property" in neg["count=3"]
    assert "no better than random seeds" in neg["count=3"] and "40 seeds" in neg["count=3"]


def test_plots_return_figures(planted):
    acc = mining.seed_accuracy(planted)
    figs = [seed_plots.plot_seed_accuracy(acc, "left"), seed_plots.plot_seed_accuracy(acc),
            seed_plots.plot_category_accuracy(acc),
            seed_plots.plot_split_half(planted, "count=3", n_permutations=200),
            seed_plots.plot_split_half(planted, "all", n_permutations=200)]
    assert all(isinstance(f, Figure) for f in figs)
    assert "r=" in figs[3].axes[0].get_title() and "40 seeds" in figs[3].axes[0].get_title()
    fig, ax = plt.subplots()
    assert seed_plots.plot_seed_accuracy(acc, "count=3", ax=ax) is fig
    with pytest.raises(ValueError, match="not in acc_df"):
        seed_plots.plot_seed_accuracy(acc, "nope")
    for f in figs + [fig]:
        plt.close(f)


def test_pooled_levels_relabel_without_losing_rows():
    import pandas as pd

    from compseed_lib.mining import pooled_levels

    df = pd.DataFrame({"seed": [0, 0, 1], "prompt_id": ["a", "b", "c"], "kind": ["count", "spatial", "count"],
                       "category": ["count=2", "left", "count=3"], "correct": [True, False, True]})
    levels = pooled_levels(df)
    assert [sorted(set(d["category"])) for d in levels] == [["all"], ["count", "spatial"],
                                                            ["count=2", "count=3", "left"]]
    assert all(len(d) == len(df) for d in levels)


# ---------------------------------------------------------------------------- paired statistics
def test_mcnemar_on_constructed_pairs():
    from compseed_lib.stats import mcnemar

    base = [True] * 50 + [False] * 50
    tuned = [True] * 50 + [True] * 30 + [False] * 20  # 30 pairs fixed, none broken
    r = mcnemar(base, tuned)
    assert (r["n_pairs"], r["a_only"], r["b_only"]) == (100, 0, 30) and r["p"] < 1e-8
    same = mcnemar(base, base)
    assert same["p"] == 1.0 and same["b_only"] == 0
    balanced = mcnemar([True, False] * 20, [False, True] * 20)  # 20 each way: no evidence
    assert balanced["p"] == 1.0
    unknown = mcnemar([True, None, False], [True, True, None])  # unknown drops the pair, never wrong
    assert unknown["n_pairs"] == 1


def test_paired_bootstrap_covers_the_true_difference_and_keeps_groups_together():
    from compseed_lib.stats import paired_bootstrap

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 8)
    base = rng.random(320) < 0.5
    tuned = base | (rng.random(320) < 0.4)  # about +0.2
    r = paired_bootstrap(base, tuned, groups, n=1000, seed=1)
    assert r["lo"] < r["diff"] < r["hi"] and r["lo"] > 0.1 and r["n_groups"] == 40
    null = paired_bootstrap(base, base, groups, n=200)
    assert null["diff"] == 0 and null["lo"] == 0 and null["hi"] == 0
    with pytest.raises(ValueError, match="groups must align"):
        paired_bootstrap(base, tuned, groups[:10])
