"""RPG regional prompting: the split-ratio grammar, plans, the cross-attention composition on tiny SD and the
mini world (plain prompt = plain pipeline, base_ratio 1 = plain pipeline, regions change images, processors
put back, PixArt refused), and the planner through the real judge server on loopback, with malformed plans
falling back to the plain prompt and counted."""
import json
import subprocess
import sys
import urllib.request

import numpy as np
import openai
import pytest
import torch

from compseed_lib import pipelines
from compseed_lib import prompts as P
from compseed_lib.config import JudgeConfig, ModelConfig
from compseed_lib.generate import seed_noise
from compseed_lib.judge import client as judge_client
from compseed_lib.judge.backends.planner import grid_ratio, plan_for
from compseed_lib.judge.server import completion
from compseed_lib.methods import planner
from compseed_lib.methods.regional import (
    Box,
    Plan,
    PlanError,
    check_plan,
    generate_regional,
    parse_split_ratio,
    plan_from_json,
    region_weights,
)

# ---------------------------------------------------------------------------- grammar and plans
GOOD = [
    ("1", [(0, 0, 1, 1)]),
    ("2,5", [(0, 0, 1, 1)]),  # one row (height 2) with one column
    ("1,1,1", [(0, 0, .5, 1), (.5, 0, 1, 1)]),
    ("1;1", [(0, 0, 1, .5), (0, .5, 1, 1)]),
    (" 1 , 1 , 3 ", [(0, 0, .25, 1), (.25, 0, 1, 1)]),
    ("1,2,1;2,1,1,1", [(0, 0, 2 / 3, 1 / 3), (2 / 3, 0, 1, 1 / 3),
                       (0, 1 / 3, 1 / 3, 1), (1 / 3, 1 / 3, 2 / 3, 1), (2 / 3, 1 / 3, 1, 1)]),
    ("0.5;1.5,1,1", [(0, 0, 1, .25), (0, .25, .5, 1), (.5, .25, 1, 1)]),
]
BAD = [("", "is empty"), ("   ", "is empty"), (None, "is empty"), ("1;;1", "row 2 is empty"), ("1;", "row 2 is empty"),
       ("1,", "'' is not a number"), ("a,1", "'a' is not a number"), ("1 1", "'1 1' is not a number"),
       ("0", "positive"), ("1,-1", "positive"), ("1,0;1", "positive"), ("nan", "positive"), ("1;inf", "positive")]


@pytest.mark.parametrize("text,boxes", GOOD)
def test_split_ratio_grammar(text, boxes):
    got = parse_split_ratio(text)
    assert [tuple(round(v, 9) for v in (b.x0, b.y0, b.x1, b.y1)) for b in got] == \
        [tuple(round(v, 9) for v in b) for b in boxes]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_split_ratios_name_the_string(text, message):
    with pytest.raises(PlanError, match="split ratio") as err:
        parse_split_ratio(text)
    assert message in str(err.value) and repr(text) in str(err.value)


@pytest.mark.parametrize("text", ["1", "1,1,1", "1;1", "1,2,1;2,1,1,1", "1,1,1,1;1,1,1", grid_ratio(6)])
@pytest.mark.parametrize("h,w", [(1, 1), (2, 2), (3, 5), (8, 8)])
def test_region_shares_partition_every_cell_and_keep_each_area(text, h, w):
    boxes = parse_split_ratio(text)
    m = region_weights(boxes, h, w)
    assert m.shape == (len(boxes), h, w) and (m >= 0).all()
    assert torch.allclose(m.sum(0), torch.ones(h, w), atol=1e-6)
    areas = torch.tensor([(b.x1 - b.x0) * (b.y1 - b.y0) for b in boxes])
    assert torch.allclose(m.mean((1, 2)), areas.float(), atol=1e-6)  # cell shares integrate to box area


def test_region_shares_are_the_boxes_where_the_grid_aligns():
    left, right = region_weights(parse_split_ratio("1,1,1"), 8, 8)
    assert (left[:, :4] == 1).all() and (left[:, 4:] == 0).all() and (right == 1 - left).all()
    top, bottom = region_weights(parse_split_ratio("1;1"), 2, 2)
    assert top.tolist() == [[1, 1], [0, 0]] and bottom.tolist() == [[0, 0], [1, 1]]
    third = region_weights([Box(0, 0, 1 / 3, 1), Box(1 / 3, 0, 1, 1)], 1, 2)
    assert torch.allclose(third, torch.tensor([[[2 / 3, 0]], [[1 / 3, 1]]]))


def test_plans_are_checked_and_read_from_json():
    p = Plan.from_text("1,1,1", "one ball, on the sand BREAK one star, on the sand", 0.3)
    assert p.prompts == ("one ball, on the sand", "one star, on the sand") and p.text.count("BREAK") == 1
    assert plan_from_json({"split_ratio": "1;1", "base_ratio": 0, "regional_prompts": ["a", "b"]}).prompts == ("a", "b")
    assert plan_from_json({"split_ratio": 1, "base_ratio": 0.5, "regional_prompts": "a"}).split_ratio == "1"
    for obj, message in [
        ({"split_ratio": "1,1,1", "base_ratio": 0.2, "regional_prompts": ["only one"]}, "2 region.*1 regional prompt"),
        ({"split_ratio": "1;1", "base_ratio": 1.5, "regional_prompts": ["a", "b"]}, r"base_ratio.*\[0, 1\].*1.5"),
        ({"split_ratio": "1;1", "base_ratio": "0.3", "regional_prompts": ["a", "b"]}, "base_ratio"),
        ({"split_ratio": "1;1", "base_ratio": 0.3, "regional_prompts": ["a", " "]}, r"regional prompt\(s\) \[1\]"),
        ({"split_ratio": "1;x", "base_ratio": 0.3, "regional_prompts": ["a", "b"]}, "'x' is not a number"),
        ({"split_ratio": "1", "base_ratio": 0.3, "regional_prompts": [3]}, "list of strings"),
        ({"split_ratio": "1", "regional_prompts": ["a"]}, r"lacks \['base_ratio'\]"),
        ({"verdict": "maybe", "answer": 3}, "lacks"), ([1, 2], "JSON object"),
        ({"split_ratio": grid_ratio(65), "base_ratio": 0.3, "regional_prompts": ["a"] * 65}, "at most 64")]:
        with pytest.raises(PlanError, match=message):
            plan_from_json(obj)
    assert check_plan(Plan.single("two balls, on the sand")).boxes == [Box(0, 0, 1, 1)]


# ---------------------------------------------------------------------------- the rule-based planner
def test_rule_based_planner_lays_out_counts_and_relations_of_every_miniworld_prompt():
    ps = [p for s in P.SPLITS for p in P.load("miniworld", s)]
    for p in ps:
        plan = plan_from_json(plan_for(p.text))  # every plan it writes passes the client's checks
        boxes = plan.boxes
        if p.kind == "count":
            assert len(boxes) == p.count and set(plan.prompts) == {P.numerical_text(p.obj, 1, p.background)}, p
            continue
        first, second = boxes
        a_first = p.relation in ("left", "above")
        assert plan.prompts[0 if a_first else 1].startswith(f"one {p.obj.name},"), p
        assert plan.prompts[1 if a_first else 0].startswith(f"one {p.obj_b.name},"), p
        if p.relation in ("left", "right"):
            assert first.x1 <= second.x0 and first.y0 == second.y0 == 0, p
        else:
            assert first.y1 <= second.y0 and first.x0 == second.x0 == 0, p
    assert grid_ratio(2) == "1,1,1" and grid_ratio(4) == "1,1,1;1,1,1" and len(parse_split_ratio(grid_ratio(5))) == 5
    assert plan_for("a ring on the top of a kite, at night")["regional_prompts"] == ["one ring, at night",
                                                                                   "one kite, at night"]
    assert plan_for("a dog on the left of a cat") == {"split_ratio": "1", "base_ratio": 0.0,
                                                      "regional_prompts": ["a dog on the left of a cat"]}


def _reply(content, refusal=None):
    return openai.types.chat.ChatCompletion.model_validate(completion(content, "planner", refusal))


def test_read_plan_accepts_fenced_or_wrapped_json_and_rejects_the_rest():
    good = json.dumps({"split_ratio": "1;1", "base_ratio": 0.3, "regional_prompts": ["a", "b"]})
    for content in (good, f"```json\n{good}\n```", f"Here is the plan: {good} Hope it helps."):
        assert planner.read_plan(_reply(content)).split_ratio == "1;1"
    for content, message in [("{\"split_ratio\": \"1;1\", ", "not JSON"), ("no plan today", "not JSON"),
                             ('{"split_ratio": "1,1,1", "base_ratio": 0.3, "regional_prompts": ["a"]}', "2 region")]:
        with pytest.raises(ValueError, match=message):
            planner.read_plan(_reply(content))
    for reply in (_reply(""), _reply(None, refusal="I can't.")):
        with pytest.raises(judge_client._Malformed):
            planner.read_plan(reply)


def test_planner_through_the_real_loopback_server():
    ps = P.load("miniworld", "eval", limit=3)
    texts = [p.text for p in ps] + ["a dog on the left of a cat"]
    results = planner.plan_all(ps + [texts[0]] + ["a dog on the left of a cat"], JudgeConfig(name="miniworld-planner"))
    assert [r.prompt for r in results] == texts[:-1] + [texts[0], texts[-1]]
    assert not any(r.fallback for r in results)
    for r in results:
        assert r.plan == plan_from_json(plan_for(r.prompt))
    n = len(results)
    assert n == 8 and planner.fallback_summary(results) == {"prompts": n, "planned": n, "fallback": 0, "reasons": {}}
    assert planner.plan_all([], JudgeConfig(name="miniworld-planner")) == []


def _faulty_server(tmp_path, rate, mix):
    from compseed_lib.judge.registry import _wait_ready

    port_file, err = tmp_path / "port", tmp_path / "server.log"
    with open(err, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "compseed_lib.judge.server", "--port", "0", "--port-file",
                                 str(port_file), "--fault-rate", str(rate), "--fault-mix", mix, "--fault-seed", "1",
                                 "--retry-after", "0", "--fault-delay", "0.5"], stdout=log_file, stderr=log_file)
    return proc, _wait_ready(proc, port_file, err, 30)


def _injected(base_url):
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=5) as r:
        return json.loads(r.read())["faults"]


def test_malformed_plans_fall_back_to_the_plain_prompt_and_are_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(judge_client, "BACKOFF_BASE", 0.01)
    ps = [p.text for p in P.load("miniworld", "eval", kinds=("count",), limit=3)]
    proc, url = _faulty_server(tmp_path, 1.0, "schema,truncated,empty,refusal")  # every reply is broken
    try:
        cfg = JudgeConfig(name="miniworld-planner", base_url=url, max_retries=1, timeout=5)
        results = planner.plan_all(ps, cfg)
        assert [r.plan for r in results] == [Plan.single(t) for t in ps] and all(r.fallback for r in results)
        assert all("miniworld-planner" in r.reason and "kept failing after 2 attempts" in r.reason for r in results)
        summary = planner.fallback_summary(results)
        assert summary["fallback"] == 6 // 2 and summary["planned"] == 0
        assert sum(summary["reasons"].values()) == 3  # a truncated body is a JSONDecodeError, the rest malformed
        assert set(summary["reasons"]) <= {"malformed reply", "JSONDecodeError"}
        assert sum(_injected(url).values()) == 6  # two tries per prompt, all of them faults
    finally:
        proc.terminate()
        proc.wait(10)


def test_planner_retries_through_faults_to_the_true_plans(tmp_path, monkeypatch):
    monkeypatch.setattr(judge_client, "BACKOFF_BASE", 0.01)
    ps = [p.text for p in P.load("miniworld", "eval", limit=6)]
    proc, url = _faulty_server(tmp_path, 0.4, "schema,truncated,empty,refusal,500,429,timeout")
    try:
        cfg = JudgeConfig(name="miniworld-planner", base_url=url, max_retries=8, timeout=0.3, concurrency=4)
        results = planner.plan_all(ps, cfg)
        assert not any(r.fallback for r in results)
        assert [r.plan for r in results] == [plan_from_json(plan_for(t)) for t in ps]
        assert sum(_injected(url).values()) > 0
    finally:
        proc.terminate()
        proc.wait(10)


# ---------------------------------------------------------------------------- composition on real pipelines
def _plain(pipe, prompts, seeds, steps, guidance, size):
    noise = seed_noise(seeds, pipelines.latent_shape(pipe, size, size))
    with torch.inference_mode():
        return pipe([p for p in prompts for _ in seeds], latents=noise.repeat(len(prompts), 1, 1, 1),
                    num_inference_steps=steps, guidance_scale=guidance, height=size, width=size).images


def _arr(images):
    return np.stack([np.asarray(i, dtype=np.int16) for i in images])


def _check_composition(pipe, prompts, plans, seeds, steps, size):
    before = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    plain = _arr(_plain(pipe, prompts, seeds, steps, 4.0, size))
    single = _arr(generate_regional(pipe, prompts, [None] * len(prompts), seeds, steps, 4.0, batch_size=3))
    assert np.abs(single - plain).max() <= 1  # one full region with the prompt itself is the plain pipeline
    full_base = [Plan(p.split_ratio, 1.0, p.prompts) for p in plans]  # base_ratio 1: the regions weigh nothing
    assert np.abs(_arr(generate_regional(pipe, prompts, full_base, seeds, steps, 4.0)) - plain).max() <= 1
    regional = generate_regional(pipe, prompts, plans, seeds, steps, 4.0, batch_size=3)
    assert len(regional) == len(prompts) * len(seeds) and regional[0].size == (size, size)
    assert np.abs(_arr(regional) - plain).max() > 20  # the regions change the images
    again = generate_regional(pipe, prompts, plans, seeds[::-1], steps, 4.0, batch_size=1)  # noise is per seed
    n = len(seeds)
    assert np.abs(_arr(again[:n][::-1]) - _arr(regional[:n])).max() <= 1
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == before  # processors put back
    return regional


def test_regional_composition_on_tiny_sd(cache):
    pipe, _ = pipelines.load_pipeline(ModelConfig(pipeline="tiny-sd", device="cpu"))
    plans = [Plan("1,1,1", 0.2, ("a red ball", "a blue cube")), Plan("1;2,1,1", 0.0, ("sky", "grass", "water"))]
    _check_composition(pipe, ["a ball and a cube", "a landscape"], plans, [0, 1], 3, 32)


def test_regional_on_the_miniworld_with_planner_plans():
    pipe, _ = pipelines.load_pipeline(ModelConfig(pipeline="miniworld", device="cpu"))
    prompts = ["three kites, in the snow", "a ring under a cross"]
    plans = [plan_from_json(plan_for(p)) for p in prompts]
    _check_composition(pipe, prompts, plans, [0, 1, 2], 4, 32)
    with pytest.raises(ValueError, match="2 prompts but 1 plans"):
        generate_regional(pipe, prompts, plans[:1], [0])
    with pytest.raises(PlanError, match="1 regional prompt"):
        generate_regional(pipe, prompts[:1], [Plan("1;1", 0.3, ("one kite, in the snow",))], [0])


def test_regional_prompting_refuses_a_pixart_transformer(cache):
    pipe, _ = pipelines.load_pipeline(ModelConfig(pipeline="tiny-pixart", device="cpu"))
    with pytest.raises(ValueError, match="regional prompting needs a UNet.*PixArtTransformer2DModel"):
        generate_regional(pipe, ["a ball"], [None], [0], steps=2)
