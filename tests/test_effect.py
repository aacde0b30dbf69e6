"""The paper's effect, measured: fine-tune settings chosen on validation prompts (tuning.py), the ceiling arm
(rendered ground truth, dataset.ceiling_dataset), and the cross-generator table (effect.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import FAKE_KEY, cli

from compseed_lib import prompts as P
from compseed_lib import tuning
from compseed_lib.config import ConfigError, load_config, validate
from compseed_lib.dataset import validation_split
from compseed_lib.effect import (
    HELD_OUT,
    IN_DISTRIBUTION,
    PAPER_GAINS,
    beside_paper,
    direction,
    effect_table,
    load,
    markdown,
    paper_model_for,
    run_all,
    write_report,
)
from compseed_lib.store import Run

REPO = Path(__file__).resolve().parents[1]


def test_validation_split_is_per_kind_disjoint_and_fixed_by_its_seed():
    ps = P.load("miniworld", "train", limit=20)
    fit, val = validation_split(ps, 0.25, seed=0)
    fit_ids, val_ids = {p.id for p in fit}, {p.id for p in val}
    assert fit_ids | val_ids == {p.id for p in ps} and not fit_ids & val_ids
    for kind in ("count", "spatial"):
        assert sum(p.kind == kind for p in val) == 5 and sum(p.kind == kind for p in fit) == 15
    assert [p.id for p in validation_split(ps, 0.25, seed=0)[1]] == [p.id for p in val]
    assert [p.id for p in validation_split(ps, 0.25, seed=1)[1]] != [p.id for p in val]
    assert validation_split(ps, 0.0)[1] == [] and len(validation_split(ps[:3], 0.01)[1]) >= 1  # at least one per kind
    two = [p for p in ps if p.kind == "count"][:2]
    assert len(validation_split(two, 0.9)[0]) == 1  # never the whole of a kind


@pytest.mark.parametrize("sets, message", [
    (["finetune.grid={}"], r"finetune.grid.*set dataset.validation"),
    (["dataset.validation=0.25", "finetune.grid={seeds: [100]}"], r"finetune.grid.seeds.*disjoint"),
    (["dataset.validation=0.25", "finetune.grid={steps: []}"], r"finetune.grid.steps"),
    (["dataset.validation=0.25", "finetune.grid={lr: [0]}"], r"finetune.grid.lr"),
    (["dataset.validation=1.5"], r"dataset.validation"),
    (["evaluate.arms=[base, qk_ceiling]", "prompts.world=comp90"], r"ceiling arm.*mini world"),
    (["dataset.validation=0.25", "finetune.grid={weights: [qk, everything]}"], r"finetune.grid.weights"),
    (["dataset.validation=0.25", "finetune.grid={weights: []}"], r"finetune.grid.weights"),
    (["dataset.prompts=some"], r"dataset.prompts"),
    (["dataset.seed_choice=worst"], r"dataset.seed_choice"),
    (["evaluate.in_distribution=-1"], r"evaluate.in_distribution"),
])
def test_bad_grid_or_ceiling_settings_name_the_key(sets, message):
    with pytest.raises(ConfigError, match=message):
        validate(load_config(REPO / "configs/smoke.yaml", sets))


def test_effect_configs_validate_and_keep_evaluation_apart_from_choice():
    for name in ("effect-pixart", "effect-sd"):
        cfg = validate(load_config(REPO / f"configs/{name}.yaml"))
        assert len(cfg.evaluate.seeds) >= 64 and not set(cfg.evaluate.seeds) & set(cfg.generate.seeds)
        grid = cfg.finetune.grid
        assert len(grid.steps) * len(grid.lr) >= 6 and set(grid.weights) == {"qk", "qkvo", "attention", "all"}
        assert "qk_ceiling" in cfg.evaluate.arms and cfg.dataset.validation > 0
        # the paper's design: a balanced mining subset, the datasets over every training prompt, both evaluations
        assert cfg.prompts.limit and cfg.dataset.prompts == "all" and cfg.evaluate.in_distribution > 0
        # the grid reaches the paper's ~263 epochs over the dataset (fit prompts x images per prompt)
        from compseed_lib.dataset import fit_prompts

        images = len(fit_prompts(cfg)) * cfg.dataset.per_prompt
        assert max(grid.steps) * cfg.finetune.batch / images >= 250
    eff = load(REPO / "configs/effect/all.yaml")
    assert {(g.captions, g.paper) for g in eff.generators} == {(c, p) for c in ("clean", "web") for p in PAPER_GAINS}


# ~65 s alone: seven notebooks on a trained mini model (the tiny random ones draw nothing the judge keeps)
def test_grid_ceiling_and_effect_table_through_the_chain(tmp_path):
    """A small run of its own on the PixArt-shaped mini model (the tiny random pipelines draw nothing the judge
    keeps, so their datasets come out empty): 00-03 and 05-07 with a validation share, a 2 x 2 grid and the
    ceiling arm (seven notebooks, six fine-tunes of a few steps); then the effect table over that run."""
    runs = tmp_path / "runs"
    sets = ["--set", f"runs_dir={runs}", "--set", "name=smoke", "--set", "model.pipeline=miniworld-pixart",
            "--set", "finetune.blocks=[2, 3]", "--set", "prompts.limit=5", "--set", "generate.seeds=[0, 1, 2]",
            "--set", "mining.top_n=2", "--set", "generate.steps=4", "--set", "judge.api_key_env=COMPSEED_FAKE_KEY"]
    grid = "finetune.grid={weights: [qk, all], steps: [2], lr: [0.0001, 0.001], seeds: [2000, 2001]}"
    extra = ["--set", "dataset.validation=0.25", "--set", grid, "--set", "evaluate.arms=[base, qk, qk_ceiling]",
             "--set", "dataset.prompts=all", "--set", "dataset.per_prompt=1", "--set", "evaluate.in_distribution=2"]
    res = cli("run", "configs/smoke.yaml", *sets, *extra, "--only",
              "00_prompts,01_generate,02_judge,03_mine_seeds,05_build_dataset,06_finetune,07_evaluate",
              "--reports", str(tmp_path / "reports"), env={"COMPSEED_FAKE_KEY": FAKE_KEY})
    assert res.returncode == 0, res.stderr[-3000:]
    run = Run.open(runs / "smoke")
    cfg = run.config()
    # the grid: base row + 2 weight choices x 2 settings, one chosen, the most accurate (ties: the paper's
    # q/k first, then fewer steps, then the smaller lr)
    t = run.load_table("finetune_grid")
    assert list(t["weights"]) == ["none", "qk", "qk", "all", "all"] and t["chosen"].sum() == 1
    assert list(t["steps"]) == [0, 2, 2, 2, 2]
    settings = t[t["steps"] > 0]
    chosen = settings[settings["chosen"]].iloc[0]
    assert chosen["accuracy"] == settings["accuracy"].max()
    val = tuning.validation_prompts(cfg)
    assert val and set(t["images"]) == {len(val) * 2}
    # validation prompts never enter a dataset
    val_ids = {p.id for p in val}
    for folder in ("dataset", "dataset_random_seeds", "dataset_unrectified", "dataset_ceiling"):
        lines = (runs / "smoke" / folder / "train" / "metadata.jsonl").read_text().splitlines()
        meta = [json.loads(line) for line in lines]
        assert not {m["prompt_id"] for m in meta} & val_ids, folder
    # the ceiling: as many images as the dataset keeps, the same prompts, captioned with the prompt
    main = [json.loads(x) for x in (runs / "smoke/dataset/train/metadata.jsonl").read_text().splitlines()]
    ceil = [json.loads(x) for x in (runs / "smoke/dataset_ceiling/train/metadata.jsonl").read_text().splitlines()]
    assert sorted((m["prompt_id"], m["seed"]) for m in main) == sorted((m["prompt_id"], m["seed"]) for m in ceil)
    texts = {p.id: p.text for p in P.for_dataset(cfg)}
    assert all(m["text"] == texts[m["prompt_id"]] and not m["rectified"] for m in ceil)
    # the paper's design: seeds mined on 5 + 5 prompts, the datasets over every training prompt but the
    # validation share, so every object is on every background and every pair under every relation
    by_id = {p.id: p for p in P.for_dataset(cfg)}
    assert len(P.for_config(cfg.prompts)) == 10 and len(by_id) == 180
    drawn = [by_id[i] for i in run.load_table("dataset_captions")["prompt_id"]]  # every image made, drops too
    objs = {o.name for o in P.read_objects(P.folder("miniworld") / "objects_train.txt")}
    bgs = set(P.read_backgrounds(P.folder("miniworld") / "backgrounds_train.txt"))
    assert {(p.obj.name, p.background) for p in drawn if p.kind == "count"} == {(o, b) for o in objs for b in bgs}
    assert {(p.obj.name, p.obj_b.name) for p in drawn if p.kind == "spatial"} == {
        (a, b) for a in objs for b in objs if a != b}
    # held-out seeds of training prompts (in distribution) beside the held-out prompts
    indist = run.load_table("evaluation_in_distribution")
    assert set(indist["arm"]) == {"base", "qk", "qk_ceiling"}
    assert int(indist[(indist["arm"] == "base") & (indist["level"] == "all")]["images"].iloc[0]) == 4 * 2
    # every arm trains with the chosen setting
    for arm in ("qk", "qk_ceiling"):
        record = json.loads((runs / f"smoke/finetune/{arm}/model/compseed_finetune.json").read_text())
        assert record["steps"] == chosen["steps"]
    assert record["images"] == len(ceil)
    ev = run.load_table("evaluation")
    assert set(ev["arm"]) == {"base", "qk", "qk_ceiling"}
    assert (tmp_path / "reports" / "smoke" / "06_finetune.ipynb").is_file()
    assert (runs / "smoke" / "figures" / "06_finetune_grid.png").is_file()
    # a model outside the arms, scored like one: the qk arm's own folder gives the qk arm's numbers again
    from compseed_lib.evaluate import against_base

    again = against_base(run, cfg, str(runs / "smoke/finetune/qk/model"), "qk_again", progress=False)
    for level in ("count", "spatial"):
        a = again[(again["arm"] == "qk_again") & (again["level"] == level)]["accuracy"].iloc[0]
        assert a == ev[(ev["arm"] == "qk") & (ev["level"] == level)]["accuracy"].iloc[0]

    # the effect table over this run, and a generator whose model is missing (reported, not run)
    runs_dir = f"runs_dir={runs}"
    spec = {"out": str(tmp_path / "effect"), "generators": [
        {"name": "smoke", "label": "tiny SD", "captions": "clean", "paper": "SD 2.1", "config": "configs/smoke.yaml",
         "set": [runs_dir]},
        {"name": "nowhere", "label": "missing", "captions": "web", "paper": "PixArt-α", "config": "configs/smoke.yaml",
         "set": [runs_dir, "model.pipeline=./no/such/model"]}]}
    (tmp_path / "effect.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    eff = load(tmp_path / "effect.yaml")
    status = run_all(eff.__class__(generators=eff.generators[1:], out=eff.out), show=False)
    assert status["nowhere"].startswith("not run: model.pipeline './no/such/model'")
    table = effect_table(eff)
    assert list(table["arm"]) == ["base", "qk", "qk_ceiling"] * 2  # the missing generator has no rows
    assert list(table["evaluation"]) == [HELD_OUT] * 3 + [IN_DISTRIBUTION] * 3
    qk = table[table["arm"] == "qk"].iloc[0]
    base_count = ev[(ev["arm"] == "base") & (ev["level"] == "count")]["accuracy"].iloc[0]
    arm_count = ev[(ev["arm"] == "qk") & (ev["level"] == "count")]
    assert qk["count_accuracy"] == arm_count["accuracy"].iloc[0]
    if base_count:
        assert qk["count_gain_lo"] <= qk["count_gain"] <= qk["count_gain_hi"]
        assert qk["count_paper_gain"] == PAPER_GAINS["SD 2.1"]["count"]
    # the same run in the paper's shape for notebook 08: each arm's direction follows its interval
    side = beside_paper(ev, paper_model_for(cfg.model.pipeline))
    assert list(side["arm"]) == ["base", "qk", "qk_ceiling"]
    assert side.loc[side["arm"] == "qk", "paper (q/k, PixArt-α)"].iloc[0] == "+19.5% / +21.1%"
    for kind, name in (("count", "counting"), ("spatial", "spatial")):
        r = table[(table["arm"] == "qk") & (table["evaluation"] == HELD_OUT)].iloc[0]
        want = direction(r.get(f"{kind}_gain_lo", np.nan), r.get(f"{kind}_gain_hi", np.nan))
        assert side.loc[side["arm"] == "qk", f"{name}: direction"].iloc[0] == want
    md = markdown(table)
    assert f"| tiny SD | clean | {HELD_OUT} | qk |" in md and "+29.3% / +60.7% (SD 2.1)" in md
    assert f"| tiny SD | clean | {IN_DISTRIBUTION} | qk |" in md
    readme = write_report(eff, {**status, "smoke": "done"}).read_text()
    assert "nowhere: not run" in readme and f"| tiny SD | clean | {HELD_OUT} | qk_ceiling |" in readme
    assert pd.read_csv(tmp_path / "effect" / "effect.csv").shape[0] == 6
    assert (tmp_path / "effect" / "gains_in_distribution.png").is_file()
    assert "The validation grids" in readme and "| tiny SD | clean | all | 2 |" in readme  # weights x steps


def test_chosen_finetune_without_its_grid_table_says_what_to_run(tmp_path):
    cfg = load_config(REPO / "configs/smoke.yaml", ["dataset.validation=0.25", "finetune.grid={}",
                                                    f"runs_dir={tmp_path}"])
    run = Run.create(cfg)
    with pytest.raises(FileNotFoundError, match="finetune_grid.csv is missing.*chooses the fine-tune settings"):
        tuning.chosen_finetune(run, cfg)
    assert tuning.chosen_finetune(run, load_config(REPO / "configs/smoke.yaml")).steps == 2  # no grid: as configured


@pytest.mark.parametrize("lo, hi, want", [(0.01, 0.3, "gain"), (-0.4, -0.001, "loss"), (-0.1, 0.2, "no clear change"),
                                          (0.0, 0.2, "no clear change"), (float("nan"), 0.1, "–")])
def test_direction_is_read_from_the_interval(lo, hi, want):
    assert direction(lo, hi) == want


@pytest.mark.parametrize("pipeline, want", [
    ("miniworld-pixart-web", "PixArt-α"), ("PixArt-alpha/PixArt-XL-2-512x512", "PixArt-α"),
    ("miniworld-web", "SD 2.1"), ("stabilityai/stable-diffusion-2-1", "SD 2.1")])
def test_paper_model_for_a_pipeline(pipeline, want):
    assert paper_model_for(pipeline) == want
