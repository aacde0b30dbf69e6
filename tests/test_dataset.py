"""Self-generated dataset: rectification of every count and relation the templates produce (captions
rebuilt from structure, read back by the answer parser), jobs from mined seeds, the imagefolder round trip."""
import json

import pandas as pd
import pytest
from conftest import kill_9

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
    status = dict(zip(table["prompt_id"], table["status"]))
    assert status == dict(zip([p.id for p in ps], [D.DROPPED, D.RECTIFIED, D.RECTIFIED, D.KEPT]))
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


# ---------------------------------------------------------------------------- kill -9 while building
KILL_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[2])
from test_dataset import _build
_build(sys.argv[1])
"""


def _build(run_dir):
    """Build one dataset on the tiny random SD (top seeds 7, 3, 11 for every category) with the exact judge."""
    from compseed_lib import pipelines
    from compseed_lib.config import load_config

    cfg = load_config("configs/smoke.yaml", ["generate.batch_size=1"])
    ps = P.load("miniworld", "train", kinds=("count",), limit=3) + \
        P.load("miniworld", "train", kinds=("spatial",), limit=3)
    top = pd.DataFrame([dict(category=c, seed=s, rank=r) for c in sorted({p.category for p in ps})
                        for r, s in enumerate((7, 3, 11), start=1)])
    pipe, info = pipelines.load_pipeline(cfg.model)
    return D.build_dataset(Run(run_dir), pipe, info, ps, D.dataset_jobs(ps, top), cfg, progress=False)


def _progress(run_dir) -> int:
    """Images written plus judgements recorded so far (0 before the ledger exists)."""
    ledger = run_dir / "ledger.sqlite"
    n_png = len(list((run_dir / "images").rglob("*.png"))) if (run_dir / "images").is_dir() else 0
    if not ledger.is_file():
        return n_png
    return n_png + int(Run(run_dir).ledger.query("SELECT COUNT(*) AS n FROM judgements")["n"].iloc[0])


# ~40 s: the dataset built once whole and once killed with -9 at several moments, each restart a new process.
@pytest.mark.slow
def test_kill_9_during_generation_and_judging_then_the_same_dataset(tmp_path, cache, monkeypatch):
    import os
    import random
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    killed_dir = tmp_path / "killed"
    env = {**os.environ, "COMPSEED_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    rng, seen, kills = random.Random(1), 0, 0
    for _ in range(5):  # each round: wait until it has made progress, then kill at a random moment
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(killed_dir), str(repo / "tests")], cwd=repo,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _progress(killed_dir) <= seen and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.2))
        kills += kill_9(proc)
        seen = _progress(killed_dir)
    assert kills >= 3
    resumed, clean = _build(killed_dir), _build(tmp_path / "clean")
    cols = ["prompt_id", "seed", "sha256", "judged", "status", "text"]
    key = ["prompt_id", "seed"]
    assert resumed[cols].sort_values(key).reset_index(drop=True).equals(
        clean[cols].sort_values(key).reset_index(drop=True))
    assert len(resumed) == 18 and resumed["sha256"].notna().all()
    # the ledgers hold the same rows: nothing lost, nothing judged twice under another key
    rows = lambda d, t, c: sorted(map(tuple, Run(d).ledger.query(f"SELECT {c} FROM {t}").values.tolist()))  # noqa: E731
    assert rows(killed_dir, "images", "stage, prompt_id, seed, sha256") == \
        rows(tmp_path / "clean", "images", "stage, prompt_id, seed, sha256")
    assert rows(killed_dir, "judgements", "stage, prompt_id, seed, question, image_sha256, parsed_answer") == \
        rows(tmp_path / "clean", "judgements", "stage, prompt_id, seed, question, image_sha256, parsed_answer")
    assert not [p for p in killed_dir.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
