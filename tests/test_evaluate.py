"""Paired evaluation on constructed judgements where the answer is known: a planted gain is found with
its interval, a null is not, unknowns are left out pairwise, the top-seed arm is paired by prompt."""
import numpy as np
import pandas as pd
import pytest

from compseed_lib import evaluate as E


def _judged(rng, p_correct: dict, n_prompts=20, seeds=range(16)):
    rows = []
    for i in range(n_prompts):
        cat = "count=2" if i % 2 else "left"
        for s in seeds:
            ok = rng.random() < p_correct[cat]
            rows.append(dict(prompt_id=f"p{i}", seed=s, kind="count" if i % 2 else "spatial", category=cat,
                             correct=ok))
    return pd.DataFrame(rows).astype({"correct": "boolean"})


def test_planted_gain_is_found_and_null_is_not():
    base = _judged(np.random.default_rng(1), {"count=2": 0.4, "left": 0.5})
    flips = np.random.default_rng(5).random(len(base)) < 0.3
    better = base.assign(correct=(base["correct"].to_numpy(dtype=bool) | flips)).astype({"correct": "boolean"})
    same = _judged(np.random.default_rng(1), {"count=2": 0.4, "left": 0.5})
    table = E.arm_table({"base": base, "qk": better, "qk_random_seeds": same}, n_bootstrap=500)
    t = table.set_index(["arm", "level"])
    qk = t.loc[("qk", "all")]
    assert qk["mcnemar_p"] < 1e-4 and qk["arm_only"] > 0
    assert t.loc[("qk", "all"), "base_only"] == 0  # the planted arm only ever fixes images
    assert 0 < qk["diff_lo"] <= qk["gain_vs_base"] <= qk["diff_hi"]
    base_acc = t.loc[("base", "all"), "accuracy"]
    assert t.loc[("qk", "all"), "relative_gain"] == pytest.approx(t.loc[("qk", "all"), "gain_vs_base"] / base_acc)
    null = t.loc[("qk_random_seeds", "all")]
    assert null["mcnemar_p"] == 1.0 and null["gain_vs_base"] == 0
    assert set(table["level"]) == {"all", "count", "spatial", "count=2", "left"}


def test_unknown_answers_are_left_out_pairwise_and_counted():
    base = pd.DataFrame(dict(prompt_id=["a", "a", "b", "b"], seed=[0, 1, 0, 1], kind="count", category="count=2",
                             correct=pd.array([True, False, None, False], dtype="boolean")))
    arm = base.assign(correct=pd.array([True, True, True, None], dtype="boolean"))
    t = E.arm_table({"base": base, "qk": arm}, n_bootstrap=100).set_index(["arm", "level"])
    assert t.loc[("qk", "all"), "n_unknown"] == 1 and t.loc[("base", "all"), "n_unknown"] == 1
    assert t.loc[("qk", "all"), "pairs"] == 2  # (b,0) and (b,1) each have an unknown side
    assert (t.loc[("qk", "all"), "base_only"], t.loc[("qk", "all"), "arm_only"]) == (0, 1)


def test_top_seed_arm_is_paired_by_prompt_and_jobs_use_each_categorys_seeds():
    from compseed_lib import prompts as P

    base = _judged(np.random.default_rng(2), {"count=2": 0.3, "left": 0.3})
    top = _judged(np.random.default_rng(3), {"count=2": 0.9, "left": 0.9}, seeds=range(100, 103))
    t = E.arm_table({"base": base, "top_seeds": top}, n_bootstrap=500).set_index(["arm", "level"])
    assert "mcnemar_p" not in t.columns or pd.isna(t.loc[("top_seeds", "all"), "mcnemar_p"])
    assert t.loc[("top_seeds", "all"), "diff_lo"] > 0.3
    ps = P.load("miniworld", "eval", limit=2)
    table = pd.DataFrame([dict(category=p.category, seed=s, rank=r) for p in ps for r, s in enumerate((9, 4), 1)])
    jobs = E.arm_jobs("top_seeds", ps, [1, 2, 3], table)
    assert [j.seed for j in jobs[:2]] == [9, 4] and len(jobs) == 2 * len(ps)
    assert len(E.arm_jobs("base", ps, [1, 2, 3], None)) == 3 * len(ps)
    with pytest.raises(ValueError, match="needs the mined top seeds"):
        E.arm_jobs("top_seeds", ps, [1], None)
    fig = E.plot_per_category(E.arm_table({"base": base, "top_seeds": top}, n_bootstrap=50))
    assert len(fig.axes) == 1
