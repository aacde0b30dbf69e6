"""The seed browser's callbacks, driven by setting widget values as a person would by clicking."""
import pytest

from compseed_lib import prompts as P
from compseed_lib.config import config_from_dict
from compseed_lib.generate import generate, make_jobs
from compseed_lib.judge import judge_stage
from compseed_lib.pipelines import load_pipeline
from compseed_lib.store import Run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A small run of the mini-world model: 2 counting + 2 spatial prompts x 4 seeds, judged."""
    root = tmp_path_factory.mktemp("browser") / "runs"
    cfg = config_from_dict({"name": "look", "runs_dir": str(root), "model": {"pipeline": "miniworld"},
                            "generate": {"seeds": [0, 1, 2, 3], "steps": 4, "guidance": 4.0, "batch_size": 16}})
    run = Run.create(cfg)
    ps = P.load("miniworld", "train", kinds=("count",), limit=2) + \
        P.load("miniworld", "train", kinds=("spatial",), limit=2)
    pipe, info = load_pipeline(cfg.model)
    generate(run, "base", pipe, info, make_jobs(ps, cfg.generate.seeds), cfg.generate, progress=False)
    judge_stage(run, "base", ps, cfg.judge, progress=False)
    return root, ps


def test_choosing_run_category_prompt_and_seeds_updates_the_grid_and_the_seed_table(runs):
    from compseed_lib.analysis.browser import ALL, SeedBrowser

    root, ps = runs
    b = SeedBrowser(root)
    assert b.figure is None and list(b.run_w.options) == ["look"]
    b.run_w.value = "look"  # what a click does
    assert b.stage_w.value == "base" and set(b.category_w.options) == {p.category for p in ps}
    assert b.prompt_w.value == ALL and b.seeds_w.value == (0, 1, 2, 3)
    assert len(b.figure.axes) == 4 and list(b.table["seed"]) == [0, 1, 2, 3]
    count_cat = next(p.category for p in ps if p.kind == "count")
    b.category_w.value = count_cat
    assert b.table["images"].sum() == 4 * sum(p.category == count_cat for p in ps)
    spatial = next(p for p in ps if p.kind == "spatial")
    b.category_w.value = spatial.category
    b.prompt_w.value = spatial.text
    b.seeds_w.value = (1, 3)
    assert list(b.table["seed"]) == [1, 3] and (b.table["images"] == 1).all()
    assert len(b.figure.axes) == 2 and spatial.text in b.figure._suptitle.get_text()
    assert all(0 <= lo <= acc <= hi <= 1 for lo, acc, hi in b.table[["lo", "accuracy", "hi"]].to_numpy())


def test_a_word_overlays_its_attention_and_an_unknown_word_is_named(runs):
    from compseed_lib.analysis.browser import SeedBrowser

    root, ps = runs
    spatial = next(p for p in ps if p.kind == "spatial")
    b = SeedBrowser(root, run="look")
    b.category_w.value = spatial.category
    b.prompt_w.value = spatial.text
    b.seeds_w.value = (0, 2)
    b.word_w.value = spatial.obj_b.name  # the second object
    assert [len(ax.images) for ax in b.figure.axes] == [2, 2]  # image + attention overlay
    assert f"attention to {spatial.obj_b.name!r}" in b.figure._suptitle.get_text()
    b.word_w.value = "zebra"
    assert "'zebra' is not a word of" in b.message and [len(ax.images) for ax in b.figure.axes] == [1, 1]
