"""Best-of-N noise search (methods/search.py) on the mini-world generator and tiny SD, judged through the real
openai client by the kit's judge server on loopback: the pick is the seed the judge scored best, its images are
the engine's, compute is recorded, best-of-k accuracy never falls with k, and a second (scoring) judge is kept
apart from the selection judge."""
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from compseed_lib import judge
from compseed_lib import prompts as P
from compseed_lib.config import JudgeConfig, ModelConfig
from compseed_lib.generate import render
from compseed_lib.judge.server import serving
from compseed_lib.methods import search
from compseed_lib.miniworld.judge import count_objects, relation_holds
from compseed_lib.pipelines import load_pipeline

SEEDS = [10000, 10001, 10002, 10003, 10004]


@pytest.fixture(scope="module")
def endpoint():
    """The kit's judge server, started as a subprocess on loopback (the local judge's path)."""
    with judge.open_endpoint(JudgeConfig()) as ep:
        yield ep


@pytest.fixture(scope="module")
def world():
    pipe, info = load_pipeline(ModelConfig(pipeline="miniworld"))
    ps = P.load("miniworld", "eval", kinds=("count",), counts=(5,), limit=1) + \
        P.load("miniworld", "eval", kinds=("spatial",), limit=1)
    return pipe, info, ps


class _Contrary(BaseHTTPRequestHandler):
    """A second judge that answers every question wrongly-shaped: 'no' to yes/no questions, '0' to counts."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "contrary", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen += 1
        question = body["messages"][0]["content"][0]["text"]
        answer = "no" if "yes or no" in question else "0"
        self._send({"id": "x", "object": "chat.completion", "created": 0, "model": "contrary",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": answer}}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})


@pytest.fixture
def contrary():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Contrary)
    srv.seen = 0
    with serving(srv):
        yield srv


def test_picks_the_seed_the_judge_scored_best_with_its_cost(world, endpoint):
    pipe, info, ps = world
    res = search.best_of_n(pipe, info, ps, SEEDS, JudgeConfig(base_url=endpoint[0]), steps=6, batch_size=4)
    cand, chosen = res.candidates, res.chosen
    assert len(cand) == len(ps) * len(SEEDS) and len(chosen) == len(ps)
    # the judge's answers are the exact judge's on the same images, which are the engine's for those seeds
    for p in ps:
        images = render(pipe, info, [p.text] * len(SEEDS), SEEDS, 6, 4.0, 32, 32)
        for s, im in zip(SEEDS, images, strict=True):
            assert np.array_equal(np.asarray(im), np.asarray(res.images[(p.id, s)]))
        mine = cand[cand.prompt_id == p.id].set_index("seed")
        exact = [str(count_objects(im, p.obj.name)) for im in images] if p.kind == "count" else \
            ["yes" if relation_holds(im, p.obj.name, p.relation, p.obj_b.name) else "no" for im in images]
        assert list(mine.select_answer) == exact
        best = mine.select_score.max()
        row = chosen[chosen.prompt_id == p.id].iloc[0]
        assert row.seed == mine.index[mine.select_score == best][0]  # the best, ties to the earliest seed
        assert row.images_generated == len(SEEDS) and row.judge_requests == len(SEEDS)
        assert "optimistic" in row.scored_by
    counted = cand[cand.prompt_id == ps[0].id]
    assert counted.select_score.nunique() > 1  # a real choice: the five-star seeds differ in what they draw
    curve = res.curve()
    assert list(curve.k) == list(range(1, len(SEEDS) + 1))
    assert (np.diff(curve.accuracy.to_numpy()) >= 0).all()  # by the judge that picks, more images never hurt
    assert curve.accuracy.iloc[-1] == chosen.select_correct.astype(float).mean()


def test_the_scoring_judge_is_kept_apart_from_the_selection_judge(world, endpoint, contrary):
    pipe, info, ps = world
    url = f"http://127.0.0.1:{contrary.server_address[1]}/v1"
    res = search.best_of_n(pipe, info, ps, SEEDS[:3], JudgeConfig(base_url=endpoint[0]), steps=6,
                           score_judge=JudgeConfig(base_url=url, model="contrary"))
    assert contrary.seen == len(ps)  # only the picks are scored by the second judge
    assert (res.chosen.correct == False).all()  # noqa: E712  its verdict, not the selection judge's
    assert res.chosen.select_correct.any() and res.chosen.scored_by.str.contains("contrary").all()
    assert (res.chosen.judge_requests == 4).all()
    curve = res.curve()
    assert (curve.judge == "score").all() and (curve.accuracy == 0).all()


def test_runs_on_tiny_sd_and_bad_inputs_are_named(cache, endpoint):
    pipe, info = load_pipeline(ModelConfig(pipeline="tiny-sd"))
    ps = P.load("miniworld", "eval", kinds=("spatial",), limit=1)
    res = search.best_of_n(pipe, info, ps, [0, 1], JudgeConfig(base_url=endpoint[0]), steps=2)
    assert len(res.chosen) == 1 and res.chosen.seed.iloc[0] in (0, 1) and len(res.images) == 2
    with pytest.raises(TypeError, match="prompts.Prompt"):
        search.best_of_n(pipe, info, ["a kite on the left of a ring"], [0], JudgeConfig(base_url=endpoint[0]))
    with pytest.raises(ValueError, match="each seed once"):
        search.best_of_n(pipe, info, ps, [0, 0], JudgeConfig(base_url=endpoint[0]))


def test_scores_prefer_right_then_closer_counts():
    p = P.load("miniworld", "eval", kinds=("count",), counts=(4,), limit=1)[0]
    assert search.score_answer(p, "4") == 1.0
    assert search.score_answer(p, "5") > search.score_answer(p, "7")
    assert np.isnan(search.score_answer(p, "I cannot answer that question.")) and np.isnan(search.score_answer(p, None))
