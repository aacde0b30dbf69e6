"""The method comparison (compare.py, notebook 09) end to end on tiny SD, judged by the kit's judge server on
loopback and planned by its planner server: every arm on the same (prompt, seed) pairs (top-seed arms on their
own), a table of every arm x metric with intervals and wall time, resume regenerates nothing, the notebook runs
through papermill, and the config section and the chain's 09 step are checked."""
import json
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest

from compseed_lib import chain, compare
from compseed_lib import prompts as P
from compseed_lib.config import ConfigError, config_from_dict
from compseed_lib.store import Run

REPO = Path(__file__).resolve().parents[1]
ARMS = ["base", "top_seeds", "regional", "guided", "best_of_n", "top_seeds_guided"]


def _cfg(root, **methods):
    return config_from_dict({
        "name": "cmp", "runs_dir": str(root), "prompts": {"limit": 2}, "model": {"pipeline": "tiny-sd"},
        "generate": {"seeds": [0, 1], "steps": 2, "batch_size": 8},
        "evaluate": {"seeds": [100, 101, 102, 103], "arms": ["base", "top_seeds"], "n_bootstrap": 100},
        "methods": {"arms": ARMS, "best_of_n": 2, "timing_probe": 2, "grid_prompts": 2, "grid_seeds": 2, **methods}})


@pytest.fixture(scope="module")
def compared(cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    cfg = _cfg(root / "runs")
    run = Run.create(cfg)
    heldout = P.for_config(cfg.prompts, split=chain.heldout_split(cfg))
    cats = sorted({p.category for p in heldout})
    top = pd.DataFrame([dict(category=c, seed=s, rank=r) for c in cats for r, s in enumerate((1, 0), 1)])
    run.save_table(top, "top_seeds")
    res = compare.run_comparison(run, heldout, top, cfg, progress=False)
    return run, cfg, heldout, top, res


def _pairs(run, arm):
    rows = run.ledger.images(compare.stage_of(arm))
    return set(zip(rows["prompt_id"], rows["seed"].astype(int)))


def test_every_arm_has_the_same_prompts_and_seeds(compared):
    run, cfg, heldout, _, res = compared
    same = {(p.id, s) for p in heldout for s in cfg.evaluate.seeds}
    for arm in ("base", "regional", "guided", "best_of_n"):
        assert _pairs(run, arm) == same, arm
        assert set(zip(res.judged[arm]["prompt_id"], res.judged[arm]["seed"])) == same
    assert _pairs(run, "top_seeds") == _pairs(run, "top_seeds_guided") == {(p.id, s) for p in heldout for s in (0, 1)}
    methods = run.ledger.images("method_guided")
    assert methods["sampler"].str.contains(r"\+infsplign\(scale=300").all()  # the method is in the ledger
    judged = run.ledger.judgements("method_regional")
    assert len(judged) == len(same) and set(judged["judge_model"]) == {"miniworld-exact"}


def test_best_of_n_picks_among_its_candidates_and_regional_plans_are_kept(compared):
    run, cfg, heldout, _, res = compared
    picks = res.choices
    assert len(picks) == len(heldout) * len(cfg.evaluate.seeds)
    for r in picks.itertuples():
        assert r.seed in compare.candidates(r.slot_seed, cfg.methods) and r.images_generated == 2
    assert res.selection_is_scoring  # one judge (the exact one) picks and scores here: stated in the table
    assert set(res.plans["prompt_id"]) == {p.id for p in heldout}
    spatial = res.plans[res.plans["prompt_id"].isin({p.id for p in heldout if p.kind == "spatial"})]
    assert (spatial["split_ratio"] != "1").all() and not res.plans["fallback"].astype(bool).any()


def test_table_has_every_arm_and_metric_with_intervals_and_wall_time(compared):
    *_, res = compared
    table = compare.comparison_table(res, n_bootstrap=100)
    for arm in ARMS:
        got = set(table.loc[table["arm"] == arm, "metric"])
        want = {"judge/all", "judge/count", "judge/spatial", "geneval/counting", "geneval/position",
                "geneval/overall", "t2i-compbench/spatial", "visor/OA", "visor/uncond", "visor/cond", "s/image",
                "images/image"}
        assert want <= got, (arm, want - got)
        assert ("judge/all - base" in got) == (arm != "base")
    assert {"visor/VISOR_1", "visor/VISOR_4"} <= set(table.loc[table["arm"] == "guided", "metric"])  # 4 seeds
    rated = table[~table["metric"].isin(["s/image", "images/image", "judge/all - base", "visor/cond"])].dropna(
        subset=["value"])
    assert ((rated["lo"] <= rated["value"] + 1e-9) & (rated["value"] <= rated["hi"] + 1e-9)).all()
    wall = table[table["metric"] == "s/image"].set_index("arm")["value"]
    assert (wall > 0).all() and set(wall.index) == set(ARMS)
    per = table[table["metric"] == "images/image"].set_index("arm")["value"]
    assert per["best_of_n"] == 2 and per["base"] == 1  # best-of-N's compute is stated
    wide = compare.wide_table(table)
    assert list(wide.index) == ARMS and wide.columns[0] == "judge/all" and "s/image" in wide.columns
    assert "[" in wide.loc["regional", "geneval/overall"]


def test_resume_regenerates_nothing(compared):
    run, cfg, heldout, top, res = compared
    before = run.ledger.images()[["stage", "prompt_id", "seed", "sha256", "created"]]
    timing = run.load_table(compare.TIMING)
    again = compare.run_comparison(run, heldout, top, cfg, progress=False)
    after = run.ledger.images()[["stage", "prompt_id", "seed", "sha256", "created"]]
    pd.testing.assert_frame_equal(before.sort_values(["stage", "prompt_id", "seed"]).reset_index(drop=True),
                                  after.sort_values(["stage", "prompt_id", "seed"]).reset_index(drop=True))
    pd.testing.assert_frame_equal(timing, run.load_table(compare.TIMING))
    for arm in ARMS:
        assert again.judged[arm]["correct"].tolist() == res.judged[arm]["correct"].tolist()
    with pytest.raises(ValueError, match="sampler"):  # other guidance settings into the same stage: refused
        compare.run_comparison(run, heldout, top, _cfg(cfg.runs_dir, guidance_scale=50.0), progress=False)


def test_the_notebook_runs_on_the_finished_comparison(compared, tmp_path):
    run, *_ = compared
    out = tmp_path / "09.ipynb"
    pm.execute_notebook(str(REPO / "notebooks" / "09_compare_methods.ipynb"), str(out), cwd=str(REPO),
                        parameters={"run_dir": str(run.root)}, progress_bar=False)
    nb = json.loads(out.read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("best_of_n" in "".join(o.get("data", {}).get("text/html", "")) for o in outputs)  # the table
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 4  # 2 prompts x (same, top) grids
    assert (run.root / "tables" / "method_comparison.csv").is_file()


def test_methods_config_is_checked_and_09_runs_only_with_it(tmp_path):
    assert chain.METHODS_STEP in chain.steps_for(_cfg(tmp_path))
    assert chain.METHODS_STEP not in chain.steps_for(config_from_dict({}))
    bad = [({"colour": 1}, "unknown config key 'methods.colour'"), ({"arms": ["regional"]}, "'base' included"),
           ({"arms": ["base", "rpg"]}, "methods.arms"), ({"arms": ["base", "qk"]}, "must also be in evaluate.arms"),
           ({"base_ratio": 1.5}, "methods.base_ratio"), ({"guidance_end": 9}, "methods.guidance"),
           ({"seed_stride": 1}, "methods.seed_stride"), ({"best_of_n": 0}, "methods.best_of_n")]
    from compseed_lib.config import validate

    for methods, message in bad:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            validate(_cfg(tmp_path, **methods))
    (tmp_path / "plain.yaml").write_text("prompts: {limit: 1}\nmodel: {pipeline: tiny-sd}\n")
    with pytest.raises(ConfigError, match="has none: add `methods: {}`"):
        chain.run_chain(tmp_path / "plain.yaml", notebooks=[chain.METHODS_STEP], report_root=tmp_path / "r")
