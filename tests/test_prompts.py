"""Prompt sets: Comp90 verbatim, templates, parsing, stable ids, splits, clear errors."""
from collections import Counter
from pathlib import Path

import pytest

from compseed_lib import prompts as P

REPO = Path(__file__).resolve().parents[1]


def test_comp90_files_are_verbatim_copies():
    """Checked against the checksums shipped beside them (taken from ../shared/comp90), and against
    ../shared/comp90 itself where it is beside the checkout."""
    import hashlib

    folder = REPO / "prompt_dataset" / "comp90"
    sums = dict(line.split()[::-1] for line in (folder / "SHA256SUMS").read_text().splitlines())
    assert sorted(sums) == sorted(p.name for p in folder.glob("*.txt")) and len(sums) == 6
    for name, digest in sums.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    shared = REPO.parent / "shared" / "comp90"
    for f in shared.glob("*.txt") if shared.is_dir() else []:
        assert (folder / f.name).read_bytes() == f.read_bytes(), f.name


def test_comp90_splits_match_the_paper():
    assert len(P.read_objects(P.folder("comp90") / "objects_train.txt")) == 60
    assert len(P.read_objects(P.folder("comp90") / "objects_eval.txt")) == 30
    assert len(P.read_backgrounds(P.folder("comp90") / "backgrounds_train.txt")) == 8
    assert len(P.read_backgrounds(P.folder("comp90") / "backgrounds_eval.txt")) == 4
    train = P.numerical_prompts("comp90", "train")
    assert len(train) == 60 * 5 * 8 == 2400  # the paper's self-generated set size
    assert Counter(p.count for p in train) == {c: 480 for c in range(2, 7)}
    train_objs = {p.obj.name for p in train}
    eval_objs = {p.obj.name for p in P.numerical_prompts("comp90", "eval")}
    assert not train_objs & eval_objs


def test_numerical_template_and_fields():
    p = P.numerical_prompts("comp90", "train")[0]
    assert p.text == "two apples, in an old european town"
    assert (p.kind, p.count, p.category, p.target, p.obj.singular) == ("count", 2, "count=2", "2", "an apple")


def test_spatial_sentences_parse_with_articles_and_all_four_relations():
    ps = P.spatial_prompts("comp90", "train")
    assert {p.relation for p in ps} == {"left", "right", "above", "below"}
    first = ps[0]
    assert first.text == "A pineapple on the left of a monkey"
    assert (first.obj.name, first.relation, first.obj_b.name) == ("pineapple", "left", "monkey")
    a, rel, b = P.parse_spatial("an owl under an umbrella")
    assert (a.name, a.singular, rel, b.name, b.singular) == ("owl", "an owl", "below", "umbrella", "an umbrella")
    a, rel, b = P.parse_spatial("a clock on the top of a car")
    assert rel == "above"
    # repeated sentences in the verbatim files are kept once
    assert len(ps) == len({p.id for p in ps}) < 320


def test_ids_are_stable_and_independent_of_order(tmp_path):
    root = tmp_path / "w"
    root.mkdir()
    objs = ["ball, a ball, balls", "star, a star, stars", "kite, a kite, kites"]
    for order, name in ((objs, "a"), (objs[::-1], "b")):
        d = root / name
        d.mkdir()
        (d / "objects_train.txt").write_text("\n".join(order) + "\n")
        (d / "backgrounds_train.txt").write_text("on the sand\nat night\n")
        (d / "spatial_prompts_train.txt").write_text("a ball on the left of a star\na star under a kite\n")
    ids_a = {p.text: p.id for p in P.load(root / "a", "train")}
    ids_b = {p.text: p.id for p in P.load(root / "b", "train")}
    assert ids_a == ids_b
    assert P.prompt_id("count", "two balls, at night") == ids_a["two balls, at night"]


def test_malformed_lines_name_file_and_line(tmp_path):
    (tmp_path / "objects_train.txt").write_text("ball, a ball, balls\nstar, stars\n")
    with pytest.raises(P.PromptFileError, match=r"objects_train.txt:2"):
        P.read_objects(tmp_path / "objects_train.txt")
    (tmp_path / "objects_train.txt").write_text("../etc, a ../etc, ../etcs\n")
    with pytest.raises(P.PromptFileError, match=r"bad object name '\.\./etc'"):
        P.read_objects(tmp_path / "objects_train.txt")
    (tmp_path / "objects_train.txt").write_text("ball, a ball, balls\n")
    (tmp_path / "spatial_prompts_train.txt").write_text("a ball on the left of a star\na ball near a star\n")
    with pytest.raises(P.PromptFileError, match=r"spatial_prompts_train.txt:2: cannot parse"):
        P.spatial_prompts(tmp_path, "train")
    with pytest.raises(P.PromptFileError, match="unknown prompt world 'nope'"):
        P.load("nope")


def test_miniworld_vocabulary_and_limit():
    train = P.load("miniworld", "train")
    evals = P.load("miniworld", "eval")
    assert {p.obj.name for p in train}.isdisjoint({p.obj.name for p in evals})
    limited = P.load("miniworld", "train", limit=20)
    cats = Counter(p.category for p in limited)
    assert sum(cats.values()) == 40
    assert {"left", "right", "above", "below"} <= set(cats) and {f"count={c}" for c in range(2, 7)} <= set(cats)
