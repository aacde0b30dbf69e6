"""Mini-world renderer and exact judge: determinism, exact ground truth, judge accuracy, robustness."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compseed_lib.miniworld import (
    BACKGROUNDS,
    KINDS,
    RELATIONS,
    background_of,
    check_vocab_matches,
    count_objects,
    judge_scene,
    relation_holds,
    render_count,
    render_relation,
    render_scene,
    report,
)

PROMPT_DIR = Path(__file__).parents[1] / "prompt_dataset/miniworld"
KIND_NAMES, BG_NAMES = list(KINDS), list(BACKGROUNDS)


def _arr(scene) -> np.ndarray:
    return np.asarray(scene.image)


def test_render_is_deterministic():
    a = render_count("star", 4, "on the sand", seed=11)
    b = render_count("star", 4, "on the sand", seed=11)
    c = render_count("star", 4, "on the sand", seed=12)
    assert np.array_equal(_arr(a), _arr(b)) and a.boxes == b.boxes
    assert not np.array_equal(_arr(a), _arr(c))
    r1 = render_relation("ball", "left", "box", "at night", seed=3, size=64)
    r2 = render_relation("ball", "left", "box", "at night", seed=3, size=64)
    assert np.array_equal(_arr(r1), _arr(r2)) and r1.boxes == r2.boxes


@pytest.mark.parametrize("size", [32, 64])
def test_ground_truth_counts_and_no_overlap(size):
    gap = 2.0 * size / 32
    for i in range(60):
        kind, count, bg = KIND_NAMES[i % 8], 1 + i % 6, BG_NAMES[i % 6]
        s = render_count(kind, count, bg, seed=i, size=size)
        assert s.image.size == (size, size) and s.image.mode == "RGB"
        assert s.count(kind) == count == len(s.boxes) and s.background == bg and s.size == size
        for b in s.boxes:
            assert 0 <= b.x0 < b.x1 <= size and 0 <= b.y0 < b.y1 <= size
        for p, q in itertools.combinations(s.boxes, 2):
            apart = (p.x1 + gap <= q.x0 + 1e-6 or q.x1 + gap <= p.x0 + 1e-6
                     or p.y1 + gap <= q.y0 + 1e-6 or q.y1 + gap <= p.y0 + 1e-6)
            assert apart, (i, p, q)
    mixed = render_scene(["ring", "ring", "tent", "heart"], "in the snow", seed=5)
    assert [mixed.count(k) for k in ("ring", "tent", "heart", "box")] == [2, 1, 1, 0]
    assert render_count("ball", 0, "at night", seed=0).boxes == []


def test_relation_renders_hold_clearly():
    for i, rel in enumerate(RELATIONS * 15):
        a, b = KIND_NAMES[i % 8], KIND_NAMES[(i + 3) % 8]
        s = render_relation(a, rel, b, BG_NAMES[i % 6], seed=i)
        ba, bb = s.boxes
        assert (ba.kind, bb.kind) == (a, b)
        dx, dy = bb.cx - ba.cx, bb.cy - ba.cy  # b relative to a
        along, across = {"left": (dx, dy), "right": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[rel]
        assert along >= 0.25 * 32 - 1e-6 and abs(across) <= 0.5 * along


def test_judge_exact_on_clean_and_blurred_renders():
    df = report.judge_accuracy(n=300, size=32, seed=123, corruptions=["blur0.5"])
    acc = df.set_index(["question", "corruption"])["accuracy"]
    for q in ("count", "relation", "relation_negative", "background"):
        assert acc[(q, "clean")] >= 0.98, (q, acc[(q, "clean")])
    assert acc[("count", "blur0.5")] >= 0.9
    assert set(df.columns) >= {"question", "corruption", "n", "accuracy"}


def test_judge_boxes_match_ground_truth_64px():
    for i in range(40):
        s = render_count(KIND_NAMES[i % 8], 1 + i % 6, BG_NAMES[i % 6], seed=1000 + i, size=64)
        j = judge_scene(s.image)
        assert j.counts[KIND_NAMES[i % 8]] == len(s.boxes) and sum(j.counts.values()) == len(s.boxes)
        assert j.background == s.background == background_of(s.image)
        for (cx, cy), box in zip(j.centroids, j.boxes, strict=True):  # each detection is inside a sprite
            assert any(t.x0 <= cx <= t.x1 and t.y0 <= cy <= t.y1 and t.kind == box.kind for t in s.boxes)


def test_relation_holds_and_absent_objects():
    s = render_relation("kite", "above", "cross", "on a cloudy day", seed=4)
    assert relation_holds(s.image, "kite", "above", "cross") is True
    assert relation_holds(s.image, "kite", "below", "cross") is False
    assert relation_holds(s.image, "cross", "below", "kite") is True
    assert relation_holds(s.image, "kite", "left", "ball") is None
    only_balls = render_count("ball", 2, "on the sand", seed=1)
    assert relation_holds(only_balls.image, "star", "left", "ball") is None
    assert count_objects(only_balls.image, "ball") == 2 and count_objects(only_balls.image, "star") == 0


def test_judge_never_crashes_on_odd_images():
    rng = np.random.default_rng(0)
    u8 = lambda *shape: rng.integers(0, 256, shape, dtype=np.uint8)  # noqa: E731
    inputs = [u8(32, 32, 3), u8(7, 50, 3), rng.random((40, 40, 3)), u8(20, 20), u8(16, 16, 4),
              np.zeros((1, 1, 3), np.uint8), np.full((33, 33, 3), np.nan), Image.fromarray(u8(64, 64, 3))]
    for x in inputs:
        j = judge_scene(x)
        assert all(v >= 0 for v in j.counts.values()) and j.background in BACKGROUNDS
        assert relation_holds(x, "ball", "left", "box") in (True, False, None)
        assert isinstance(count_objects(x, "ring"), int)
    with pytest.raises(ValueError):
        judge_scene(np.zeros((4, 4, 5)))


def test_unknown_names_raise_with_the_name():
    img = render_count("ball", 1, "on the sand", seed=0).image
    cases = [lambda: render_count("dragon", 2, "on the sand", 0),
             lambda: render_count("ball", 2, "on mars", 0),
             lambda: render_relation("ball", "near", "box", "on the sand", 0),
             lambda: render_scene(["box", "dragon"], "on the sand", 0),
             lambda: count_objects(img, "dragon"),
             lambda: relation_holds(img, "ball", "near", "box")]
    for case, name in zip(cases, ["dragon", "on mars", "near", "dragon", "dragon", "near"], strict=True):
        with pytest.raises(ValueError, match=name) as err:
            case()
        assert "valid" in str(err.value)
    with pytest.raises(ValueError, match="count"):
        render_count("ball", -1, "on the sand", 0)
    with pytest.raises(ValueError, match="corruption"):
        report.judge_accuracy(n=1, corruptions=["fog"])


def test_vocab_matches_prompt_files(tmp_path):
    check_vocab_matches(PROMPT_DIR)
    (tmp_path / "objects_train.txt").write_text("ball, a ball, balls\ndragon, a dragon, dragons\n")
    (tmp_path / "backgrounds_train.txt").write_text("on mars\n")
    with pytest.raises(ValueError, match="dragon") as err:
        check_vocab_matches(tmp_path)
    assert "on mars" in str(err.value)


def test_report_main_writes_markdown(tmp_path):
    out = tmp_path / "judge_accuracy.md"
    assert report.main(["--n", "12", "--corruptions", "noise8", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| count |" in text and "noise8" in text and "clean" in text
