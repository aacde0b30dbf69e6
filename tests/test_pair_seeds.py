"""Pair analysis of spatial prompts: mirror / opposite prompts anti-correlate when the seed, not the
relation word, places each kind."""
import numpy as np
import pandas as pd
import pytest

from compseed_lib.analysis import pair_seeds


def _prompts(pairs, relations):
    rows = []
    for rel in relations:
        for a, b in pairs:
            for x, y in ((a, b), (b, a)):
                rows.append({"prompt_id": f"{x}-{rel}-{y}", "kind": "spatial", "relation": rel, "obj": x, "obj_b": y})
    rows.append({"prompt_id": "count", "kind": "count", "relation": None, "obj": "ball", "obj_b": None})
    return pd.DataFrame(rows)


def _judged(prompts, seeds, correct_fn):
    rows = [{"prompt_id": r.prompt_id, "seed": s, "correct": correct_fn(r, s)}
            for r in prompts.itertuples(index=False) for s in seeds]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("a,b,kind", [
    (("left", "ball", "star"), ("left", "star", "ball"), "mirror"),
    (("left", "ball", "star"), ("right", "ball", "star"), "opposite"),
    (("above", "ball", "star"), ("below", "ball", "star"), "opposite"),
    (("left", "ball", "star"), ("left", "ball", "box"), "shared"),
    (("left", "ball", "star"), ("left", "tent", "box"), "other"),
    (("left", "ball", "star"), ("above", "ball", "star"), None),
    (("left", "ball", "star"), ("right", "star", "ball"), None),
])
def test_pair_type(a, b, kind):
    assert pair_seeds.pair_type(a, b) == kind


def test_seed_placing_kinds_makes_mirror_and_opposite_prompts_anticorrelate():
    prompts = _prompts([("ball", "star"), ("box", "tent")], ["left", "right"])
    rng = np.random.default_rng(1)
    x = {s: {k: rng.random() for k in ("ball", "star", "box", "tent")} for s in range(40)}  # seed -> x per kind

    def correct(r, s):  # the relation word is ignored: where each kind lands is the seed's doing
        if r.kind != "spatial":
            return True
        left_of = x[s][r.obj] < x[s][r.obj_b]
        return left_of if r.relation == "left" else not left_of

    pairs = pair_seeds.pair_correlations(_judged(prompts, range(40), correct), prompts)
    summary = pair_seeds.summarize(pairs)
    assert set(pairs["type"]) == {"mirror", "opposite", "other"}
    assert summary.loc["mirror", "mean_r"] == pytest.approx(-1.0)
    assert summary.loc["opposite", "mean_r"] == pytest.approx(-1.0)
    assert abs(summary.loc["other", "mean_r"]) < 0.4  # independent kinds
    assert "count" not in set(pairs["prompt_a"]) | set(pairs["prompt_b"])
    assert pair_seeds.plot_pair_types(pairs) is not None


def test_a_model_that_follows_relations_leaves_r_undefined():
    prompts = _prompts([("ball", "star")], ["left", "right"])
    pairs = pair_seeds.pair_correlations(_judged(prompts, range(10), lambda r, s: True), prompts)
    assert len(pairs) == 4 and pairs["r"].isna().all()  # two mirror pairs, two opposite pairs
    assert pair_seeds.summarize(pairs).empty
