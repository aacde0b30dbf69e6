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
    # a second run with the same arm name ('base') and other seeds and prompts: switching must reload
    other = config_from_dict({**cfg.to_dict(), "name": "other", "generate": {**cfg.to_dict()["generate"],
                                                                             "seeds": [7, 8]}})
    run2 = Run.create(other)
    ps2 = P.load("miniworld", "train", kinds=("count",), limit=3)
    generate(run2, "base", pipe, info, make_jobs(ps2, [7, 8]), other.generate, progress=False)
    judge_stage(run2, "base", ps2, other.judge, progress=False)
    return root, ps


def test_choosing_run_category_prompt_and_seeds_updates_the_grid_and_the_seed_table(runs):
    from compseed_lib.analysis.browser import ALL, SeedBrowser

    root, ps = runs
    b = SeedBrowser(root)
    assert b.figure is None and list(b.run_w.options) == ["look", "other"]
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


def test_messages_reach_the_page_at_once_and_nothing_stale_stays(runs):
    """What the user sees: the message widget, the output area's images, the table, after each choice."""
    import time

    from compseed_lib.analysis.browser import INTERVAL, SeedBrowser

    root, ps = runs
    b = SeedBrowser(root, run="look")
    count = next(p for p in ps if p.kind == "count")
    b.category_w.value = count.category
    assert len(b.out.outputs) == 1 and b.message_w.value == ""
    t = time.monotonic()
    b.word_w.value = "zebra"  # not in the prompt: said on the page, before any model loads
    assert time.monotonic() - t < 2.0
    assert "&#x27;zebra&#x27; is not a word of" in b.message_w.value and "zebra" in b.message
    assert b.figure is not None and len(b.out.outputs) == 1  # the images, without an overlay
    b.word_w.value = ""
    assert b.message_w.value == ""
    b.seeds_w.value = ()  # every seed deselected: no images left from before, and the page says why
    assert b.figure is None and b.out.outputs == () and b.table.empty
    assert "no seed chosen" in b.message_w.value and b.stats_w.value == ""
    b.seeds_w.value = (1,)
    assert len(b.out.outputs) == 1 and b.message_w.value == ""
    assert all(c in b.stats_w.value for c in INTERVAL.values())  # the table says its interval is 95%


def test_switching_runs_with_the_same_arm_reloads_the_run(runs):
    from compseed_lib.analysis.browser import SeedBrowser

    root, _ = runs
    b = SeedBrowser(root, run="look")
    assert b.stage_w.value == "base" and set(b.seeds_w.options) == {0, 1, 2, 3}
    b.run_w.value = "other"  # the arm stays 'base': the other run's judgements, categories and seeds
    assert b.stage_w.value == "base" and set(b.seeds_w.options) == {7, 8}
    assert set(b.judged["seed"].astype(int)) == {7, 8} and set(b.table["seed"]) <= {7, 8}
    assert all(p.startswith(("two", "three", "four", "five", "six")) for p in b.prompt_w.options[1:])
    b.run_w.value = "look"
    assert set(b.seeds_w.options) == {0, 1, 2, 3}


def test_eight_seeds_wrap_so_their_titles_stay_readable(runs):
    from compseed_lib.analysis.browser import COLUMNS, SeedBrowser

    root, ps = runs
    b = SeedBrowser(root, run="look", max_seeds=8)
    b.seeds_w.value = (0, 1, 2, 3)
    fig = b.figure
    width_in = fig.get_size_inches()[0]
    assert width_in <= 2.4 * COLUMNS + 0.1  # at most four images a row
    title = fig.axes[0].title
    assert title.get_fontsize() >= 10
