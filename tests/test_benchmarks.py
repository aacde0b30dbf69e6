"""Benchmarks in the field's formats (GenEval, T2I-CompBench spatial, VISOR) and the offline detector judge."""
import json
from contextlib import contextmanager

import pandas as pd
import pytest

from compseed_lib import benchmarks
from compseed_lib import prompts as P
from compseed_lib.benchmarks import compbench, geneval, visor
from compseed_lib.config import JudgeConfig
from compseed_lib.judge.detections import Detection, detections_answer, parse_detections
from compseed_lib.judge.templates import detect_question, parse_question


def _spatial(a="ball", rel="left", b="star") -> P.Prompt:
    text = f"a {a} {P.RELATION_TEXT[rel]} a {b}"
    return P.Prompt(P.prompt_id("spatial", text), text, "spatial", P.Obj(a, f"a {a}", a + "s"), "eval",
                    "miniworld", relation=rel, obj_b=P.Obj(b, f"a {b}", b + "s"))


def _row(prompt, seed, dets):
    return dict(prompt_id=prompt.id, seed=seed, prompt=prompt.text, kind=prompt.kind,
                metadata=geneval.metadata_for(prompt), detections=dets)


def D(cls, x0, y0, x1, y1, s=1.0):
    return Detection(cls, (x0, y0, x1, y1), s)


LEFT = [D("ball", 0, 10, 10, 20), D("star", 30, 10, 40, 20)]   # ball clearly left of star
RIGHT = [D("ball", 30, 10, 40, 20), D("star", 0, 10, 10, 20)]
ONLY_BALL = [D("ball", 0, 10, 10, 20)]


def test_geneval_metadata_round_trips_in_genevals_format(tmp_path):
    ps = P.load("miniworld", "eval")
    path = geneval.write_metadata(ps, tmp_path / "evaluation_metadata.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == len(ps) and geneval.read_metadata(path) == [geneval.metadata_for(p) for p in ps]
    count = next(json.loads(x) for x in lines if json.loads(x)["tag"] == "counting")
    pos = next(json.loads(x) for x in lines if json.loads(x)["tag"] == "position")
    p = next(p for p in ps if p.text == count["prompt"])
    assert count == {"tag": "counting", "include": [{"class": p.obj.name, "count": p.count}],
                     "exclude": [{"class": p.obj.name, "count": p.count + 1}], "prompt": p.text}
    q = next(p for p in ps if p.text == pos["prompt"])
    assert pos["include"] == [{"class": q.obj_b.name, "count": 1},
                              {"class": q.obj.name, "count": 1,
                               "position": [geneval.RELATION_WORDS[q.relation], 0]}]
    (tmp_path / "bad.jsonl").write_text('{"tag": "position", "prompt": "x", "include": [{"class": 3}]}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        geneval.read_metadata(tmp_path / "bad.jsonl")


def test_geneval_rules_on_hand_made_detections():
    three = next(p for p in P.load("miniworld", "eval", kinds=("count",)) if p.count == 3)
    md = geneval.metadata_for(three)
    k = three.obj.name
    boxes = [D(k, 10 * i, 0, 10 * i + 5, 5) for i in range(4)]
    assert geneval.image_correct(md, boxes[:3])
    assert not geneval.image_correct(md, boxes[:2])            # too few
    assert not geneval.image_correct(md, boxes)                # exclude: 4 >= 3 + 1
    assert geneval.image_correct(md, boxes[:3] + [D(k, 50, 0, 55, 5, 0.85)])  # below the counting threshold 0.9
    sp = geneval.metadata_for(_spatial())
    assert geneval.image_correct(sp, LEFT) and not geneval.image_correct(sp, RIGHT)
    assert not geneval.image_correct(sp, ONLY_BALL)
    # overlapping boxes: the offset shrinks to nothing, no relation holds
    assert geneval.relative_position(D("a", 0, 0, 10, 10), D("b", 1, 0, 11, 10)) == set()
    assert geneval.relative_position(D("a", 0, 0, 10, 10), D("b", 0, 40, 10, 50)) == {"above"}


def test_compbench_spatial_score_matches_its_rule():
    lo = compbench.LOCALITY
    assert compbench.position_score(lo["left of"], (0, 0, 10, 10), (20, 0, 30, 10)) == 1.0
    assert compbench.position_score(lo["left of"], (20, 0, 30, 10), (0, 0, 10, 10)) == 0.0
    assert compbench.position_score(lo["left of"], (0, 0, 10, 10), (2, 0, 12, 10)) == pytest.approx(0.1 / (80 / 120))
    assert compbench.position_score(lo["above"], (0, 0, 10, 10), (0, 30, 10, 40)) == 1.0
    assert compbench.position_score(lo["below"], (0, 0, 10, 10), (0, 30, 10, 40)) == 0.0
    md = geneval.metadata_for(_spatial())
    assert compbench.image_score(md, LEFT) == 1.0
    assert compbench.image_score(md, [D("ball", 0, 10, 10, 20, 0.8), D("star", 30, 10, 40, 20, 0.6)]) == \
        pytest.approx(0.25 * 0.8 + 0.25 * 0.6 + 0.5)
    assert compbench.image_score(md, RIGHT) == 0.5           # both found (0.25 + 0.25), wrong relation
    assert compbench.image_score(md, ONLY_BALL) == 0.0        # 0.25 < 0.5 -> 0


def test_visor_metrics_on_a_constructed_table():
    pa, pb, pc = _spatial("ball", "left", "star"), _spatial("kite", "above", "box"), _spatial("ring", "right", "tent")
    kite_above = [D("kite", 10, 0, 20, 10), D("box", 10, 30, 20, 40)]
    rows = ([_row(pa, s, LEFT) for s in range(4)]                                       # 4 of 4 right
            + [_row(pb, 0, kite_above), _row(pb, 1, kite_above), _row(pb, 2, []),         # 2 right, 1 none
               _row(pb, 3, [D("kite", 10, 30, 20, 40), D("box", 10, 0, 20, 10)])]         # found, wrong
            + [_row(pc, s, []) for s in range(4)])                                        # nothing drawn
    table = visor.score(pd.DataFrame(rows), n_boot=200).set_index("metric")
    assert table.loc["visor/OA", "value"] == pytest.approx(7 / 12)
    assert table.loc["visor/uncond", "value"] == pytest.approx(6 / 12)
    assert table.loc["visor/cond", "value"] == pytest.approx(6 / 7)
    expect = {1: 2 / 3, 2: 2 / 3, 3: 1 / 3, 4: 1 / 3}
    for k, v in expect.items():
        assert table.loc[f"visor/VISOR_{k}", "value"] == pytest.approx(v)
    assert (table["lo"] <= table["value"] + 1e-9).all() and (table["value"] <= table["hi"] + 1e-9).all()
    assert table.loc["visor/OA", "n_prompts"] == 3


def test_score_all_gives_every_metric_with_intervals():
    count = next(p for p in P.load("miniworld", "eval", kinds=("count",)) if p.count == 2)
    k = count.obj.name
    rows = ([_row(count, s, [D(k, 0, 0, 5, 5), D(k, 20, 0, 25, 5)]) for s in range(2)]
            + [_row(count, s, [D(k, 0, 0, 5, 5)]) for s in (2, 3)]
            + [_row(_spatial(), s, LEFT if s % 2 else RIGHT) for s in range(4)])
    table = benchmarks.score_all(pd.DataFrame(rows), n_boot=200).set_index("metric")
    assert table.loc["geneval/counting", "value"] == 0.5 and table.loc["geneval/position", "value"] == 0.5
    assert table.loc["geneval/overall", "value"] == 0.5
    assert table.loc["t2i-compbench/spatial", "value"] == pytest.approx((1 + 0.5) / 2)
    assert {"visor/OA", "visor/cond", "visor/VISOR_4"} <= set(table.index)
    assert list(table.columns[:3]) == ["value", "lo", "hi"]
    with pytest.raises(ValueError, match="lacks columns"):
        benchmarks.score_all(pd.DataFrame({"prompt_id": []}))


def test_detect_question_and_answer_round_trip():
    q = detect_question(["ball", "teddy bear"])
    assert parse_question(q) == ("detect", ("ball", "teddy bear"))
    text = detections_answer(64, 48, [D("ball", 1, 2, 3, 4, 0.5), D("star", 5, 6, 7, 8, 0.9)])
    w, h, dets = parse_detections(json.dumps({"answer": text}))
    assert (w, h) == (64, 48) and [d.cls for d in dets] == ["star", "ball"]
    with pytest.raises(ValueError, match="not a detection answer"):
        parse_detections("3")


def test_mini_world_generations_scored_through_the_real_judge_server():
    """A few shipped-model generations, asked for boxes through the loopback judge server, scored."""
    from compseed_lib.config import ModelConfig
    from compseed_lib.generate import seed_noise
    from compseed_lib.miniworld import judge_scene
    from compseed_lib.pipelines import load_pipeline

    ps = [p for p in P.load("miniworld", "eval", limit=2)]
    pipe, info = load_pipeline(ModelConfig(pipeline="miniworld"))
    seeds = [0, 1, 2, 3]
    items = []
    for p in ps:
        images = pipe([p.text] * len(seeds), latents=seed_noise(seeds, (4, 8, 8)), num_inference_steps=10,
                      guidance_scale=4.0, height=32, width=32, output_type="pil", **info["call_kwargs"]).images
        items += [(p, s, im) for s, im in zip(seeds, images)]
    answers = benchmarks.ask_detections(items, JudgeConfig())
    assert len(answers) == len(items) and not answers["bad_answer"].any()
    for (p, _, im), dets in zip(items, answers["detections"]):   # the server's boxes are the judge's own
        want = [b for b in judge_scene(im).boxes if b.kind in {p.obj.name, getattr(p.obj_b, "name", None)}]
        assert [(d.cls, d.box) for d in dets] == [(b.kind, (b.x0, b.y0, b.x1, b.y1)) for b in want]
    table = benchmarks.score_all(answers, n_boot=200).set_index("metric")
    assert {"geneval/counting", "geneval/position", "geneval/overall", "t2i-compbench/spatial",
            "visor/OA", "visor/VISOR_1"} <= set(table.index)
    assert ((table["lo"] <= table["value"] + 1e-9) & (table["value"] <= table["hi"] + 1e-9)).all()


@contextmanager
def _detector_judge(model: str):
    """(judge config, skimage.data) with `model` served on loopback; skips without the extra or the model."""
    pytest.importorskip("cv2", reason="the offline detector needs the `detector` extra (pip install -e .[detector])")
    data = pytest.importorskip("skimage.data", reason="sample photos come with scikit-image (the `detector` extra)")
    from compseed_lib.judge.backends.detector import DetectorUnavailable, model_files
    from compseed_lib.judge.server import make_server, serving

    try:
        model_files(model)
    except DetectorUnavailable as e:
        pytest.skip(f"no {model} model installed: {e}")
    with serving(make_server("127.0.0.1", 0, models=(model,))) as base_url:
        yield JudgeConfig(base_url=base_url, model=model), data


def test_offline_detector_finds_the_face_in_a_scikit_image_photo_through_the_server():
    from PIL import Image

    from compseed_lib.judge import ask

    with _detector_judge("face-detector") as (cfg, data):
        astronaut, coffee = Image.fromarray(data.astronaut()), Image.fromarray(data.coffee())
        faces = "How many faces are in this image? Answer with a single number."
        assert ask(astronaut, faces, cfg) == '{"answer": "1"}' and ask(coffee, faces, cfg) == '{"answer": "0"}'
        w, h, dets = parse_detections(ask(astronaut, detect_question(["face"]), cfg))
        assert (w, h) == (512, 512) and len(dets) == 1 and dets[0].score > 0.9
        cx, cy = dets[0].center   # Eileen Collins' face: upper middle of the photo
        assert 150 < cx < 300 and 40 < cy < 200, dets


def test_offline_coco_detector_finds_cat_person_and_cup_in_scikit_image_photos_through_the_server():
    from PIL import Image

    from compseed_lib.judge import ask
    from compseed_lib.judge.templates import COUNT_TEMPLATE, RELATION_TEMPLATE

    with _detector_judge("coco-detector") as (cfg, data):
        cat, person, cup = (Image.fromarray(f()) for f in (data.chelsea, data.astronaut, data.coffee))
        # (photo, class, box the object must cover, box it must stay inside), pixels
        for image, cls, inner, outer in [(cat, "cat", (120, 60, 330, 250), (0, 0, 451, 300)),
                                         (person, "person", (100, 100, 300, 500), (0, 0, 420, 512)),
                                         (cup, "cup", (220, 60, 380, 230), (120, 0, 470, 320))]:
            w, h, dets = parse_detections(ask(image, detect_question([cls]), cfg))
            assert (w, h) == image.size and len(dets) == 1 and dets[0].score > 0.5, (cls, dets)
            x0, y0, x1, y1 = dets[0].box
            assert x0 <= inner[0] and y0 <= inner[1] and x1 >= inner[2] and y1 >= inner[3], (cls, dets)
            assert x0 >= outer[0] and y0 >= outer[1] and x1 <= outer[2] and y1 <= outer[3], (cls, dets)
        count = lambda image, plural: json.loads(ask(image, COUNT_TEMPLATE.format(plural=plural), cfg))["answer"]
        assert [count(cat, "cats"), count(cup, "cats"), count(person, "people"), count(cat, "people")] == \
            ["1", "0", "1", "0"]
        pair = Image.new("RGB", (901, 300))   # the cat beside the cup: a relation between two real photos
        pair.paste(cat, (0, 0))
        pair.paste(cup.resize((450, 300)), (451, 0))
        left = lambda a, b: json.loads(ask(pair, RELATION_TEMPLATE.format(a=a, phrase="to the left of", b=b),
                                           cfg))["answer"]
        assert (left("cat", "cup"), left("cup", "cat"), left("cat", "dog")) == ("yes", "no", "no")
