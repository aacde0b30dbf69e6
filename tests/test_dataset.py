"""Self-generated dataset: rectification of every count and relation the templates produce (captions
rebuilt from structure, read back by the answer parser), jobs from mined seeds, the imagefolder round trip."""
import json

import pandas as pd
import pytest

from compseed_lib import dataset as D
from compseed_lib import prompts as P
from compseed_lib.judge import parse_count, parse_yes_no
from compseed_lib.judge.client import png_bytes
from compseed_lib.prompts import COUNT_WORDS, OPPOSITE, Obj
from compseed_lib.store import Run, atomic_write_bytes, sha256_bytes

ALL_COUNTS = tuple(range(1, 11))


def _count_prompts():
    return [p for w in P.WORLDS for s in P.SPLITS for p in P.numerical_prompts(w, s, counts=ALL_COUNTS)
            if p.background == P.read_backgrounds(P.folder(w) / f"backgrounds_{s}.txt")[0]]


def test_counting_captions_are_rebuilt_from_structure_for_every_object_and_count():
    for p in _count_prompts():
        for n in [None, 0, *range(1, 13)]:
            r = D.rectify(p, n)
            if n is None or n == 0 or n > max(COUNT_WORDS):
                assert r.status == D.DROPPED and r.text is None, (p.text, n)
            elif n == p.count:
                assert (r.status, r.text) == (D.KEPT, p.text)
            else:
                assert r.status == D.RECTIFIED and r.text.endswith(f", {p.background}"), (p.text, n)
                head = r.text[: -len(p.background) - 2]
                want = p.obj.singular if n == 1 else f"{COUNT_WORDS[n]} {p.obj.plural}"
                assert head == want, (p.text, n, r.text)
                assert parse_count(r.text, p.obj) == n, (r.text, n)  # the new caption says n


@pytest.mark.parametrize("name, singular, plural, n, caption", [
    ("tent", "a tent", "tents", 10, "ten tents, on the sand"),
    ("octopus", "an octopus", "octopuses", 3, "three octopuses, on the sand"),
    ("fish", "a fish", "fish", 4, "four fish, on the sand"),
    ("dice", "a dice", "dice", 1, "a dice, on the sand"),
    ("twelve", "a twelve", "twelves", 2, "two twelves, on the sand"),
    ("knife", "a knife", "knives", 6, "six knives, on the sand"),
    ("apple", "an apple", "apples", 1, "an apple, on the sand"),
])
def test_tricky_object_words(name, singular, plural, n, caption):
    obj = Obj(name, singular, plural)
    text = P.numerical_text(obj, 5, "on the sand")
    p = P.Prompt(P.prompt_id("count", text), text, "count", obj, "train", "test", count=5, background="on the sand")
    r = D.rectify(p, n)
    assert (r.text, r.status) == (caption, D.RECTIFIED)
    assert parse_count(r.text, obj) == n


def test_spatial_captions_for_every_relation_and_pair():
    for p in [p for w in P.WORLDS for s in P.SPLITS for p in P.spatial_prompts(w, s)]:
        assert D.rectify(p, p.relation) == D.Rectified(p.text, D.KEPT, "as asked")
        flipped = D.rectify(p, OPPOSITE[p.relation])
        assert flipped.status == D.RECTIFIED
        assert flipped.text == f"{p.obj.singular} {P.RELATION_TEXT[OPPOSITE[p.relation]]} {p.obj_b.singular}"
        q = D.opposite_prompt(p)
        assert (q.relation, q.text) == (OPPOSITE[p.relation], flipped.text)
        assert parse_yes_no(flipped.text, (p.obj, OPPOSITE[p.relation], p.obj_b)) is True
        assert D.rectify(p, None).status == D.DROPPED


def test_jobs_take_each_categorys_top_seeds():
    ps = P.load("miniworld", "train", limit=4)
    top = pd.DataFrame([dict(category=c, seed=s, rank=r) for c in {p.category for p in ps}
                        for r, s in enumerate((7, 3, 11), start=1)])
    jobs = D.dataset_jobs(ps, top)
    assert len(jobs) == 3 * len(ps) and [j.seed for j in jobs[:3]] == [7, 3, 11]
    assert len(D.dataset_jobs(ps, top, per_prompt=1)) == len(ps)
    with pytest.raises(ValueError, match="no top seeds for categories"):
        D.dataset_jobs(ps, top[top["category"] != ps[0].category])


def test_imagefolder_round_trip(tmp_path):
    from datasets import load_dataset

    from compseed_lib.miniworld import render_count, render_relation

    ps = P.load("miniworld", "train", kinds=("count",), limit=2) + P.load("miniworld", "train", kinds=("spatial",),
                                                                           limit=2)
    run = Run(tmp_path / "run")
    rows, values = [], {}
    for i, p in enumerate(ps):
        scene = render_count(p.obj.name, p.count + (i % 2), p.background, seed=i) if p.kind == "count" else \
            render_relation(p.obj.name, p.relation if i % 2 else OPPOSITE[p.relation], p.obj_b.name, "on the sand", i)
        data = png_bytes(scene.image)
        path = run.image_path(D.STAGE, p.id, 5)
        atomic_write_bytes(path, data)
        rows.append(dict(stage=D.STAGE, prompt_id=p.id, seed=5, prompt=p.text, kind=p.kind, category=p.category,
                         target=p.target, path=str(path.relative_to(run.root)), sha256=sha256_bytes(data)))
        drawn_relation = p.relation if i % 2 else OPPOSITE.get(p.relation)
        values[(p.id, 5)] = (p.count + (i % 2)) if p.kind == "count" else drawn_relation
    run.ledger.add_images(rows)
    values[(ps[0].id, 5)] = None  # an unknown answer: dropped
    table = D.rectify_table(run.ledger.images(D.STAGE), values, ps)
    assert list(table["status"]) == [D.DROPPED, D.RECTIFIED, D.RECTIFIED, D.KEPT]
    folder = D.export_imagefolder(run, table)
    ds = load_dataset("imagefolder", data_dir=str(folder), split="train")
    assert len(ds) == 3 and set(ds.column_names) >= {"image", "text", "prompt_id", "seed", "category", "target",
                                                      "judged", "rectified"}
    got = {r["prompt_id"]: r for r in ds}
    for r in table[table["status"] != D.DROPPED].itertuples():
        assert got[r.prompt_id]["text"] == r.text and got[r.prompt_id]["rectified"] == (r.status == D.RECTIFIED)
        assert got[r.prompt_id]["image"].size == (32, 32)
    meta = [json.loads(line) for line in (folder / "train" / "metadata.jsonl").read_text().splitlines()]
    assert len(meta) == 3 and all(m["file_name"].endswith(".png") for m in meta)
    s = D.summary(table).set_index("category")
    assert s.loc["all"].tolist() == [1, 2, 1]
