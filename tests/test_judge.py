"""Judge: answer parsing, question templates, the real judge server behind the real openai client,
judge_stage on a hand-built run (cache, resume, corrupt files), and retries against a flaky server."""
import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from compseed_lib import judge
from compseed_lib import prompts as P
from compseed_lib.config import JudgeConfig
from compseed_lib.judge import client as judge_client
from compseed_lib.judge.client import png_bytes, run_sync
from compseed_lib.judge.server import FAULTS
from compseed_lib.store import Run, atomic_write_bytes, sha256_bytes

# ---------------------------------------------------------------------------- parsing

COUNT_CASES = [
    ("3", 3), ("12", 12), ("There are 12 balls.", 12), ("there are 12", 12), ("twelve", 12),
    ("Three", 3), ("3. There are 3 stars.", 3), ("0", 0), ("none", 0), ("No.", None), ("zero", 0),
    ("There are no balls in the image.", 0), ("2 or 3", None), ("two or three", None),
    ("between 4 and 5", None), ("I can't tell.", None), ("unknown", None),
    ("Sorry, I cannot count them.", None), ('{"answer": "3"}', 3), ('{"count": 3}', 3),
    ('{"answer": "12 balls"}', 12), ('```json\n{"answer": "four"}\n```', 4), ("2.5", None),
    ("", None), (None, None), ("twenty", 20), ('{"answer": "yes"}', None),
]
YES_NO_CASES = [
    ("yes", True), ("Yes.", True), ("No", False), ("no.", False), ("true", True), ("False", False),
    ("Yes, there is no doubt.", True), ("No, the ball is on the right of the star.", False),
    ("The answer is yes.", True), ('{"answer": "yes"}', True), ('{"answer":"no"}', False),
    ("yes and no", None), ("Yes. No.", None), ("I cannot tell.", None), ("Sorry, yes", None),
    ("maybe", None), ("", None), (None, None), ("unknown", None),
]


@pytest.mark.parametrize("text,expected", COUNT_CASES)
def test_parse_count_whole_tokens_single_number(text, expected):
    assert judge.parse_count(text) == expected


@pytest.mark.parametrize("text,expected", YES_NO_CASES)
def test_parse_yes_no(text, expected):
    assert judge.parse_yes_no(text) is expected


def test_is_correct_and_question_round_trip():
    ps = [p for s in P.SPLITS for p in P.load("miniworld", s)] + P.load("comp90", "eval", limit=40)
    for p in ps:
        parsed = judge.parse_question(judge.question_for(p))
        if p.kind == "count":
            assert parsed == ("count", p.obj.plural.lower()), p
            assert judge.is_correct(p, p.count) is True and judge.is_correct(p, p.count + 1) is False
        else:
            assert parsed == ("relation", p.obj.name.lower(), p.relation, p.obj_b.name.lower()), p
            assert judge.is_correct(p, True) is True and judge.is_correct(p, False) is False
        assert judge.is_correct(p, None) is None
    assert judge.parse_question("What colour is the sky?") is None


def test_registry_resolves_names_overrides_and_keys(monkeypatch):
    with pytest.raises(ValueError, match="unknown judge 'gpt5'.*gpt-4o.*miniworld-local"):
        judge.resolve(JudgeConfig(name="gpt5"))
    spec = judge.resolve(JudgeConfig(name="vllm-qwen2-vl", base_url="http://10.0.0.2:9000/v1/", model="m"))
    assert (spec.base_url, spec.model, spec.local) == ("http://10.0.0.2:9000/v1", "m", False)
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        judge.resolve(JudgeConfig(name="gpt-4o", api_key_env="sk-abc123"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        judge.api_key(judge.resolve(JudgeConfig(name="gpt-4o")))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert judge.api_key(judge.resolve(JudgeConfig(name="gpt-4o"))) == "sk-test"
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    assert judge.api_key(judge.resolve(JudgeConfig(name="vllm-qwen2-vl"))) == "not-needed"


# ---------------------------------------------------------------------------- the real judge server

@pytest.fixture(scope="module")
def endpoint():
    """The kit's judge server, started as a subprocess by open_endpoint (the local judge's path)."""
    with judge.open_endpoint(JudgeConfig()) as ep:
        yield ep


def _stats(base_url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=5) as r:
        return json.loads(r.read())["requests"]


def _chat(client, image, question, **kw) -> str:
    url = "data:image/png;base64," + __import__("base64").b64encode(png_bytes(image)).decode()
    r = client.chat.completions.create(model="miniworld-exact", temperature=0, messages=[{
        "role": "user", "content": [{"type": "text", "text": question},
                                    {"type": "image_url", "image_url": {"url": url}}]}], **kw)
    return r.choices[0].message.content


def test_server_answers_counts_and_relations_through_openai_client(endpoint):
    from compseed_lib.miniworld import render_count, render_relation

    base_url, model, key = endpoint
    assert model == "miniworld-exact" and key == "not-needed"
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)
    assert [m.id for m in client.models.list().data] == ["miniworld-exact", "miniworld-planner"]
    cases = [("star", "stars", 3), ("box", "boxes", 5), ("ball", "balls", 2)]
    for seed, (kind, plural, n) in enumerate(cases):
        img = render_count(kind, n, "on the sand", seed=seed).image
        q = f"How many {plural} are in this image? Answer with a single number."
        assert _chat(client, img, q) == str(n)
        as_json = _chat(client, img, q, response_format=judge_client.RESPONSE_FORMAT)
        assert json.loads(as_json) == {"answer": str(n)}
        assert judge.parse_count(as_json) == n
    opposite = {"left": "right", "right": "left", "above": "below", "below": "above"}
    for seed, rel in enumerate(opposite):
        img = render_relation("heart", rel, "kite", "in the snow", seed=seed).image
        q = f"Is the heart {P.RELATION_TEXT[rel]} the kite? Answer yes or no."
        assert _chat(client, img, q) == "yes"
        assert _chat(client, img, q.replace(P.RELATION_TEXT[rel], P.RELATION_TEXT[opposite[rel]])) == "no"
        assert json.loads(_chat(client, img, q, response_format={"type": "json_object"})) == {"answer": "yes"}
    img = render_count("star", 2, "at night", seed=0).image
    assert _chat(client, img, "How many dragons are in this image?") == "I cannot answer that question."
    assert _chat(client, img, "What is this?") == "I cannot answer that question."
    with pytest.raises(openai.BadRequestError, match="could not be decoded"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": [
            {"type": "text", "text": "How many stars are in this image?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]}])
    with pytest.raises(openai.BadRequestError, match="stream"):
        client.chat.completions.create(model=model, stream=True, messages=[{"role": "user", "content": "hi"}])


def test_ask_helper_works_with_and_without_a_running_loop(endpoint):
    from compseed_lib.miniworld import render_count

    cfg = JudgeConfig(base_url=endpoint[0])
    img = render_count("tent", 4, "on a stone floor", seed=3).image
    q = "How many tents are in this image? Answer with a single number."
    assert judge.parse_count(judge.ask(img, q, cfg)) == 4

    async def inside_a_loop():  # what a Jupyter cell does
        return judge.ask(img, q, cfg)

    assert judge.parse_count(asyncio.run(inside_a_loop())) == 4


def _make_run(tmp_path, stage="base", n_prompts=2, seeds=(0, 1), name="run"):
    """A tiny run by hand: n count + n spatial prompts x seeds, rendered exactly."""
    from compseed_lib.miniworld import render_count, render_relation

    ps = P.load("miniworld", "train", kinds=("count",), limit=n_prompts) + \
        P.load("miniworld", "train", kinds=("spatial",), limit=n_prompts)
    run = Run(tmp_path / name)
    rows = []
    for p in ps:
        for seed in seeds:
            scene = render_count(p.obj.name, p.count, p.background, seed=seed) if p.kind == "count" else \
                render_relation(p.obj.name, p.relation, p.obj_b.name, "on the sand", seed=seed)
            data = png_bytes(scene.image)
            path = run.image_path(stage, p.id, seed)
            atomic_write_bytes(path, data)
            rows.append(dict(stage=stage, prompt_id=p.id, seed=seed, prompt=p.text, kind=p.kind,
                             category=p.category, target=p.target, model="render", height=32, width=32,
                             path=str(path.relative_to(run.root)), sha256=sha256_bytes(data)))
    run.ledger.add_images(rows)
    return run, ps


def test_judge_stage_writes_correct_rows_and_resumes_from_cache(tmp_path, endpoint):
    run, ps = _make_run(tmp_path)
    cfg = JudgeConfig(base_url=endpoint[0], concurrency=4)
    before = _stats(endpoint[0])
    df = judge.judge_stage(run, "base", ps, cfg, progress=False)
    assert _stats(endpoint[0]) - before == 8
    assert len(df) == 8 and df["correct"].all() and set(df["judge_model"]) == {"miniworld-exact"}
    counts = df[df["kind"] == "count"]
    assert (counts["parsed_answer"] == counts["target"]).all()
    assert set(df.loc[df["kind"] == "spatial", "parsed_answer"]) == {"yes"}
    assert all(json.loads(a)["answer"] for a in df["raw_answer"])  # JSON-schema mode was used
    # A second call sends nothing and adds no rows.
    again = judge.judge_stage(run, "base", ps, cfg, progress=False)
    assert _stats(endpoint[0]) - before == 8 and len(again) == 8
    # The same images under another stage are answered from the (sha256, question, model) cache.
    for r in run.ledger.images("base").to_dict("records"):
        src = run.root / r["path"]
        dst = run.image_path("copy", r["prompt_id"], r["seed"])
        atomic_write_bytes(dst, src.read_bytes())
        run.ledger.add_images([{**r, "stage": "copy", "path": str(dst)}])
    copy = judge.judge_stage(run, "copy", ps, cfg, progress=False)
    assert _stats(endpoint[0]) - before == 8 and len(copy) == 8 and copy["correct"].all()


def test_corrupt_or_missing_image_names_the_file_and_writes_nothing(tmp_path, endpoint):
    run, ps = _make_run(tmp_path)
    cfg = JudgeConfig(base_url=endpoint[0])
    bad = run.image_path("base", ps[1].id, 1)
    atomic_write_bytes(bad, b"not a png")
    with pytest.raises(judge.CorruptImageError, match=bad.name):
        judge.judge_stage(run, "base", ps, cfg, progress=False)
    bad.unlink()
    with pytest.raises(judge.CorruptImageError, match=f"{bad.name} is missing"):
        judge.judge_stage(run, "base", ps, cfg, progress=False)
    assert run.ledger.query("SELECT COUNT(*) AS n FROM judgements")["n"][0] == 0


def test_image_damaged_after_judging_is_named_before_any_table_reads_it(tmp_path, endpoint):
    run, ps = _make_run(tmp_path)
    cfg = JudgeConfig(base_url=endpoint[0])
    judge.judge_stage(run, "base", ps, cfg, progress=False)
    bad = run.image_path("base", ps[0].id, 0)
    bad.write_bytes(bad.read_bytes()[:40])  # truncated after it was judged
    with pytest.raises(judge.CorruptImageError, match=f"{bad.name} is corrupt.*compseed run"):
        judge.judge_stage(run, "base", ps, cfg, progress=False)


def test_regenerated_image_with_another_hash_is_judged_again(tmp_path, endpoint):
    """A judgement belongs to one version of an image: a file made again (another batch size can change
    a pixel by 1/255, so its hash) gets a fresh judgement instead of the old one."""
    from compseed_lib.miniworld import render_count

    run, ps = _make_run(tmp_path)
    cfg = JudgeConfig(base_url=endpoint[0])
    judge.judge_stage(run, "base", ps, cfg, progress=False)
    p = next(q for q in ps if q.kind == "count")
    row = run.ledger.images("base").query("prompt_id == @p.id and seed == 0").iloc[0].to_dict()
    wrong = png_bytes(render_count(p.obj.name, p.count + 1, p.background, seed=99).image)
    atomic_write_bytes(run.root / row["path"], wrong)
    run.ledger.add_images([{**row, "sha256": sha256_bytes(wrong)}])
    before = _stats(endpoint[0])
    df = judge.judge_stage(run, "base", ps, cfg, progress=False)
    assert _stats(endpoint[0]) - before == 1 and len(df) == 8
    new = df.query("prompt_id == @p.id and seed == 0").iloc[0]
    assert new["image_sha256"] == sha256_bytes(wrong) and new["parsed_answer"] == str(p.count + 1)
    assert not new["correct"]
    # the table holds only the prompts asked for now
    assert set(judge.judge_stage(run, "base", ps[:2], cfg, progress=False)["prompt_id"]) == {ps[0].id, ps[1].id}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_down_server_gives_one_clear_message_quickly(tmp_path):
    run, ps = _make_run(tmp_path)
    url = f"http://127.0.0.1:{_free_port()}/v1"
    t0 = time.monotonic()
    with pytest.raises(judge.JudgeUnavailable) as err:
        judge.judge_stage(run, "base", ps, JudgeConfig(base_url=url, max_retries=4), progress=False)
    msg = str(err.value)
    assert time.monotonic() - t0 < 5
    assert msg.startswith(f"judge server at {url} is not reachable (") and msg.count("not reachable") == 1
    assert "start it with `compseed serve-judge` or fix judge.base_url" in msg
    assert run.ledger.query("SELECT COUNT(*) AS n FROM judgements")["n"][0] == 0


# ---------------------------------------------------------------------------- retries

class _Flaky(BaseHTTPRequestHandler):
    """Answers POSTs by a script of statuses (429, 500, 'nojson', 200), then 200 with '3'."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "flaky", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        srv.seen.append(body)
        step = srv.script.pop(0) if srv.script else srv.default
        if step == "nojson" and "response_format" in body:
            return self._send(400, {"error": {"message": "response_format json_schema is not supported",
                                              "type": "invalid_request_error"}})
        if step in (429, 500):
            return self._send(step, {"error": {"message": f"status {step}", "type": "server_error"}})
        self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "flaky",
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": "3"}}],
                         "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})


@pytest.fixture
def flaky(monkeypatch):
    monkeypatch.setattr(judge_client, "BACKOFF_BASE", 0.01)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    srv.script, srv.default, srv.seen = [], 200, []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _ask_flaky(srv, cfg_kw, n=1):
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    cfg = JudgeConfig(base_url=url, model="flaky", **cfg_kw)

    async def go():
        async with judge.JudgeClient(url, "flaky", "not-needed", cfg) as jc:
            await jc.check()
            return [await jc.ask(b"\x89PNG", "How many stars?") for _ in range(n)]

    return url, run_sync(go())


def test_retries_429_then_500_then_ok(flaky):
    flaky.script = [429, 500, 200]
    _, answers = _ask_flaky(flaky, {"max_retries": 3})
    assert answers == ["3"] and len(flaky.seen) == 3


def test_always_500_gives_judge_unavailable_after_max_retries(flaky):
    flaky.default = 500
    with pytest.raises(judge.JudgeUnavailable, match=r"kept failing after 3 attempts") as err:
        _ask_flaky(flaky, {"max_retries": 2})
    assert "'flaky'" in str(err.value) and f"127.0.0.1:{flaky.server_address[1]}" in str(err.value)
    assert len(flaky.seen) == 3


def test_server_without_response_format_falls_back_to_free_text(flaky):
    flaky.script = ["nojson"]
    _, answers = _ask_flaky(flaky, {}, n=2)
    assert answers == ["3", "3"]
    assert ["response_format" in b for b in flaky.seen] == [True, False, False]


# ---------------------------------------------------------------------------- server exposure and backends
def test_server_binds_loopback_only_unless_told_otherwise():
    from compseed_lib.judge.server import is_loopback, main, make_server

    for host in ("0.0.0.0", "192.168.1.10", "::", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(ValueError, match=f"refusing to bind '{host}'"):
            make_server(host, 0)
    assert main(["--host", "0.0.0.0", "--port", "0"]) == 2  # the CLI refuses too, with the message logged
    httpd = make_server("127.0.0.1", 0)
    try:
        assert httpd.server_address[0] == "127.0.0.1"
        assert list(httpd.backends) == ["miniworld-exact", "miniworld-planner"]
    finally:
        httpd.server_close()


def test_backend_answers_without_http_and_unknown_backend_is_named():
    from compseed_lib.judge.backends import make_backend
    from compseed_lib.miniworld import render_count

    judge_backend = make_backend("miniworld-exact")
    img = render_count("kite", 4, "in the snow", seed=3).image
    assert judge_backend.answer("How many kites are in this image? Answer with a single number.", img) == "4"
    assert judge_backend.answer("What colour is the sky?", img).startswith("I cannot answer")
    with pytest.raises(ValueError, match="unknown judge backend 'gpt-9'"):
        make_backend("gpt-9")


# ---------------------------------------------------------------------------- fault mode
@pytest.fixture
def faulty_server(tmp_path):
    """The judge server with 30% of chat requests faulted (every kind), started as a subprocess."""
    import subprocess
    import sys

    from compseed_lib.judge.registry import _wait_ready

    port_file, err = tmp_path / "port", tmp_path / "server.log"
    with open(err, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "compseed_lib.judge.server", "--port", "0", "--port-file",
                                 str(port_file), "--fault-rate", "0.3", "--fault-seed", "3", "--fault-delay", "0.5",
                                 "--retry-after", "0"], stdout=log_file, stderr=log_file)
    try:
        yield _wait_ready(proc, port_file, err, 30)
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_stage_against_30_percent_faults_records_only_true_answers_and_a_rerun_fills_in(
        tmp_path, endpoint, faulty_server, monkeypatch, caplog):
    import logging

    monkeypatch.setattr(judge_client, "BACKOFF_BASE", 0.01)
    clean_run, ps = _make_run(tmp_path, n_prompts=6, seeds=(0, 1, 2), name="clean")
    clean = judge.judge_stage(clean_run, "base", ps, JudgeConfig(base_url=endpoint[0]), progress=False)
    run, _ = _make_run(tmp_path, n_prompts=6, seeds=(0, 1, 2), name="faulty")
    cfg = JudgeConfig(base_url=faulty_server, timeout=0.25, concurrency=4)
    key = ["prompt_id", "seed"]
    cols = key + ["raw_answer", "parsed_answer", "correct"]

    def same_as_clean(df):
        merged = df[cols].merge(clean[cols], on=key, suffixes=("", "_clean"))
        assert len(merged) == len(df)
        for c in cols[2:]:
            assert (merged[c].astype(str) == merged[f"{c}_clean"].astype(str)).all(), c

    with caplog.at_level(logging.INFO, logger="compseed_lib.judge.stage"):
        first = judge.judge_stage(run, "base", ps, replace(cfg, max_retries=0), progress=False)  # no retries
    assert 0 < len(first) < len(clean) == 36  # some requests failed, and nothing was recorded for them
    same_as_clean(first)
    summary = [r.getMessage() for r in caplog.records if "failed after retries" in r.getMessage()][-1]
    assert f"{len(first)} answered, 0 unknown" in summary and f"{len(clean) - len(first)} failed" in summary
    for _ in range(5):  # reruns with retries fill in what failed
        done = judge.judge_stage(run, "base", ps, replace(cfg, max_retries=6), progress=False)
        if len(done) == len(clean):
            break
    same_as_clean(done)
    with urllib.request.urlopen(faulty_server.removesuffix("/v1") + "/stats", timeout=5) as r:
        injected = json.loads(r.read())["faults"]
    assert set(injected) == set(FAULTS)  # every kind of fault was met and survived


def test_a_server_bound_beyond_loopback_requires_its_token(monkeypatch):
    from compseed_lib.judge.server import TOKEN_ENV, make_server

    with pytest.raises(ValueError, match=f"without a token: set the environment variable {TOKEN_ENV}"):
        make_server("0.0.0.0", 0, allow_remote=True)
    httpd = make_server("0.0.0.0", 0, allow_remote=True, token="s3cret-token")
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        with pytest.raises(judge.JudgeUnavailable, match="rejected the API key"):
            _check(url, "wrong")
        _check(url, "s3cret-token")  # the token travels as the API key
        req = urllib.request.Request(url + "/models")
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(req, timeout=5)
    finally:
        httpd.shutdown()
        httpd.server_close()


def _check(url, key):
    async def go():
        async with judge.JudgeClient(url, "miniworld-exact", key, JudgeConfig(base_url=url)) as jc:
            await jc.check()

    run_sync(go())
