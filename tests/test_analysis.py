"""Analysis: the seed-to-layout statistic behind the README's layout numbers (a planted layout effect is
found, a null one is not), the world guard, and the pooled reliability tables notebook 04 shows."""
import numpy as np
import pandas as pd

from compseed_lib import mining
from compseed_lib.analysis import layout
from compseed_lib.judge.client import png_bytes
from compseed_lib.miniworld import render_count
from compseed_lib.store import Run, atomic_write_bytes, sha256_bytes

KINDS = ["ball", "kite", "star", "tent", "ring", "box", "cross", "heart"]
BGS = ["on the sand", "in the snow", "at night", "on a stone floor"]


def _layout_run(tmp_path, planted: bool) -> Run:
    """8 prompts x 12 seeds of 2 objects; with `planted`, a seed fixes where they go (render seed = seed),
    without, every image has its own placement."""
    run = Run(tmp_path / ("planted" if planted else "null"))
    rows = []
    for i, kind in enumerate(KINDS):
        pid = f"p{i}"
        for seed in range(12):
            render_seed = seed if planted else 1000 + 37 * i + seed
            data = png_bytes(render_count(kind, 2, BGS[i % 4], seed=render_seed).image)
            path = run.image_path("base", pid, seed)
            atomic_write_bytes(path, data)
            rows.append(dict(stage="base", prompt_id=pid, seed=seed, prompt=f"two {kind}s", kind="count",
                             category="count=2", target="2", model="render", path=str(path.relative_to(run.root)),
                             sha256=sha256_bytes(data)))
    run.ledger.add_images(rows)
    return run


def test_layout_reliability_finds_a_planted_effect_and_not_a_null_one(tmp_path):
    half_a, half_b = [f"p{i}" for i in range(4)], [f"p{i}" for i in range(4, 8)]
    planted = layout.heatmap_reliability(layout.object_masks(_layout_run(tmp_path, True), "base"), half_a, half_b)
    null = layout.heatmap_reliability(layout.object_masks(_layout_run(tmp_path, False), "base"), half_a, half_b)
    assert planted["seeds"] == 12 and null["seeds"] == 12
    assert planted["same_seed_r"] > 0.8 and planted["same_seed_r"] - planted["different_seed_r"] > 0.5
    assert abs(null["same_seed_r"] - null["different_seed_r"]) < 0.15
    fig = layout.plot_heatmaps(layout.object_masks(_layout_run(tmp_path, True), "base"), [0, 1], [2])
    assert len(fig.axes) == 4


def test_layout_guard_names_the_world():
    assert layout.unsupported("miniworld") is None
    assert "comp90" in layout.unsupported("comp90") and "skipped" in layout.unsupported("comp90")


def _judged(rng, n_seeds=20, n_prompts=16, effect=0.0):
    skill = rng.normal(0, effect, n_seeds)
    rows = []
    for p in range(n_prompts):
        for s in range(n_seeds):
            prob = 1 / (1 + np.exp(-skill[s]))
            rows.append(dict(seed=s, prompt_id=f"q{p}", category=f"count={2 + p % 2}", kind="count",
                             correct=bool(rng.random() < prob)))
    return pd.DataFrame(rows)


def test_pooled_tables_and_best_and_worst():
    rng = np.random.default_rng(0)
    select, score = _judged(rng, effect=2.0), _judged(rng, effect=0.0)
    score["prompt_id"] = "h" + score["prompt_id"]
    sh = mining.split_half_levels(select, n_permutations=200)
    assert list(sh["category"]) == ["all", "count", "count=2", "count=3"]
    tr = mining.transfer_levels(select, score, k=3)
    assert list(tr["category"]) == ["all", "count", "count=2", "count=3"] and (tr["k"] == 3).all()
    best, worst = mining.best_and_worst(select, k=3)
    acc = select.groupby("seed")["correct"].mean()
    assert acc[best[0]] == acc.max() and acc[worst[0]] == acc.min() and not set(best) & set(worst)


def test_seed_by_category_heatmap_and_per_object_accuracy():
    from compseed_lib import prompts as P
    from compseed_lib.analysis.seed_plots import plot_object_accuracy, plot_seed_category_heatmap

    acc = pd.DataFrame([dict(category=c, seed=s, n=4, correct=k, accuracy=k / 4)
                        for c, base in (("count=2", 3), ("count=3", 1), ("left", 4))
                        for s, k in zip(range(70), np.random.default_rng(0).integers(0, 5, 70) * 0 + base)])
    fig = plot_seed_category_heatmap(acc, max_seeds=40)
    grid = fig.axes[0].images[0].get_array()
    assert grid.shape == (3, 40)  # three categories, 20 best + 20 worst seeds
    assert np.allclose(grid[:, 0], [0.75, 0.25, 1.0])  # rows in natural order: count=2, count=3, left
    ps = P.load("miniworld", "train", kinds=("count",), limit=4) + \
        P.load("miniworld", "train", kinds=("spatial",), limit=2)
    judged = pd.DataFrame([dict(prompt_id=p.id, seed=s, correct=(s % 2 == 0) if p.kind == "count" else True)
                           for p in ps for s in range(10)] + [dict(prompt_id=ps[0].id, seed=99, correct=None)])
    fig = plot_object_accuracy(judged, ps)
    bars = [b.get_height() for b in fig.axes[0].patches]
    assert all(h == 0.5 for h in bars[:len({p.obj.name for p in ps if p.kind == "count"})])


def test_paper_figures_are_written_as_png_and_pdf_byte_for_byte_the_same_each_time(tmp_path):
    import matplotlib.pyplot as plt

    from compseed_lib.analysis.paper import paper_style, save_paper_figure

    def draw():
        with paper_style():
            fig, ax = plt.subplots(figsize=(2, 2))
            ax.plot([0, 1], [0, 1])
            ax.set_title("x")
        return fig

    a = save_paper_figure(draw(), tmp_path / "a", "f")
    b = save_paper_figure(draw(), tmp_path / "b", "f")
    assert [p.suffix for p in a] == [".png", ".pdf"]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    assert b"CreationDate" not in a[1].read_bytes()
