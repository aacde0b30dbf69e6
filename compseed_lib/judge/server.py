"""An OpenAI-compatible judge server on loopback: HTTP and the chat-completions protocol only.

Speaks just enough of the chat-completions protocol for `openai.OpenAI(...).chat.completions.create`
with an image: the last user message holds the question text and a data-URL image (PNG/JPEG).
  GET  /v1/models             -> {"object": "list", "data": [{"id": "miniworld-exact", ...}]}
  POST /v1/chat/completions   -> a chat.completion whose content is "3" / "yes" / "no", or
                                 {"answer": "..."} as JSON when response_format asks for JSON;
                                 for a text-only model (the planner) the backend's own JSON
  GET  /stats                 -> {"requests": n, "faults": {kind: n}} (chat requests served; for tests)
Only the standard library (ThreadingHTTPServer). Each model id is served by a backend
(`judge/backends/`: the exact mini-world judge, the rule-based mini-world planner "miniworld-planner")
chosen by the request's `model`; `--models` picks which are served (the offline OpenCV detectors
"coco-detector" / "face-detector" of `backends/detector.py` answer counts, relations and boxes). Binds loopback
only unless --allow-remote. Responses go out in one write (headers and body buffered together) without
Nagle's delay (TCP_NODELAY), so a kept-alive connection never waits for the client's delayed ACK (that
wait cost ~40 ms a request). `--latency 0.2` holds every chat answer that long (a remote API's round
trip, for benchmarks: `compseed bench`).

Fault mode (`--fault-rate 0.3`): that share of chat requests gets one of FAULTS instead of its answer —
a reply after `--fault-delay` seconds (a client timeout), 429 with Retry-After, 500, a truncated JSON
body, a chat completion whose content breaks the answer schema, an empty answer, a refusal — chosen by a
seeded generator, the kinds of `--fault-mix` in turn. For testing clients; /stats counts what was injected.

Usage:
    compseed serve-judge --port 8765          # or: python -m compseed_lib.judge.server --port 0 --port-file p
    client = openai.OpenAI(base_url="http://127.0.0.1:8765/v1", api_key="not-needed")
"""
from __future__ import annotations

import argparse
import base64
import binascii
import io
import ipaddress
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .backends import Backend, make_backend

log = logging.getLogger(__name__)
DEFAULT_MODELS = ("miniworld-exact", "miniworld-planner")
TOKEN_ENV = "COMPSEED_JUDGE_TOKEN"  # the token a non-loopback server requires (never on the command line)
FAULTS = ("timeout", "429", "500", "truncated", "schema", "empty", "refusal")
MAX_BODY = 32 * 1024 * 1024  # bytes; a 1024x1024 PNG as base64 is well under this


class BadRequest(ValueError):
    """A request the server rejects with 400 and an OpenAI-style error body."""


def decode_image(url: str) -> Image.Image:
    """A PIL RGB image from a data URL; BadRequest naming the problem otherwise."""
    if not isinstance(url, str) or not url.startswith("data:"):
        raise BadRequest("image_url must be a data: URL (data:image/png;base64,...); this server fetches "
                         "nothing from the network")
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header:
        raise BadRequest("image data URL must be base64-encoded (data:image/png;base64,...)")
    try:
        data = base64.b64decode(payload, validate=True)
        img = Image.open(io.BytesIO(data))
        img.load()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as e:
        raise BadRequest(f"image could not be decoded as PNG/JPEG: {type(e).__name__}: {e}") from None
    return img.convert("RGB")


def split_message(body: dict, needs_image: bool = True) -> tuple[str, Image.Image | None]:
    """(question text, image) from the last user message of a chat-completions request body; a model
    that reads text only (`needs_image` False) takes a message without an image (image None)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise BadRequest("no user message in 'messages'")
    content = users[-1].get("content")
    texts, urls = [], []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                raise BadRequest("message content parts must be objects")
            if part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif part.get("type") == "image_url":
                iu = part.get("image_url")
                urls.append(iu.get("url") if isinstance(iu, dict) else iu)
    else:
        raise BadRequest("message content must be a string or a list of content parts")
    if not needs_image and not urls:
        return " ".join(texts).strip(), None
    if len(urls) != 1:
        raise BadRequest(f"the last user message must hold exactly one image_url part, found {len(urls)}")
    return " ".join(texts).strip(), decode_image(urls[0])


def completion(content: str | None, model: str, refusal: str | None = None) -> dict:
    """A chat.completion response object."""
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": refusal},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


class FaultPlan:
    """Which chat requests get a fault, and which one: `rate` of them, drawn by a generator seeded with
    `seed`, each given the next kind of `mix` in turn (thread-safe; counts what it injected)."""

    def __init__(self, rate: float = 0.0, mix: tuple[str, ...] = FAULTS, seed: int = 0, delay: float = 2.0,
                 retry_after: float = 1.0):
        import random

        bad = [m for m in mix if m not in FAULTS]
        if not 0 <= rate <= 1 or bad or not mix:
            raise ValueError(f"fault rate must be in [0, 1] and the mix a non-empty subset of {FAULTS}; "
                             f"got rate {rate!r}, unknown kinds {bad}")
        self.rate, self.mix, self.delay, self.retry_after = rate, tuple(mix), delay, retry_after
        self._rng, self._lock = random.Random(seed), threading.Lock()
        self.injected: dict[str, int] = {}

    def draw(self) -> str | None:
        """The fault for the next request, or None."""
        if not self.rate:
            return None
        with self._lock:
            if self._rng.random() >= self.rate:
                return None
            kind = self.mix[sum(self.injected.values()) % len(self.mix)]  # in turn: every kind is met
            self.injected[kind] = self.injected.get(kind, 0) + 1
            return kind


class Handler(BaseHTTPRequestHandler):
    """Routes /v1/models, /v1/chat/completions and /stats; `server.backends` do the work."""

    server_version = "compseed-judge/0.1"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY: never wait for the client's delayed ACK
    wbufsize = -1  # buffered: headers and body leave in one write when the handler flushes

    def _send(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._send(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})

    def log_message(self, fmt: str, *args) -> None:  # request line and status only, never headers
        log.debug("%s " + fmt, self.address_string(), *args)

    def _authorised(self) -> bool:
        """True without a token; else the request must carry it (constant-time compare); 401 otherwise."""
        import hmac

        if not self.server.token:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.server.token}".encode()):
            return True
        self._drain()
        self._error(401, "missing or wrong token (send it as the API key)", "authentication_error")
        return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if not self._authorised():
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "compseed"} for m in self.server.backends]})
        elif path == "/stats":
            self._send(200, {"requests": self.server.requests, "faults": dict(self.server.faults.injected)})
        elif path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        else:
            self._error(404, f"unknown path {path!r}", "not_found_error")

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorised():
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._drain()
            return self._error(404, f"unknown path {path!r}", "not_found_error")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return self._error(413, f"request body of {length} bytes exceeds {MAX_BODY}")
        try:
            body = json.loads(self.rfile.read(length) or b"null")
            if not isinstance(body, dict):
                raise BadRequest("request body must be a JSON object")
            self.server.count_request()
            if body.get("stream"):
                raise BadRequest("stream=true is not supported by this judge server")
            model = body.get("model") or next(iter(self.server.backends))
            if model not in self.server.backends:
                return self._error(404, f"model {model!r} not found; this server serves "
                                        f"{sorted(self.server.backends)}", "not_found_error")
            backend = self.server.backends[model]
            question, image = split_message(body, getattr(backend, "needs_image", True))
            fault = self.server.faults.draw()
            if fault and fault != "timeout":
                return self._fault(fault, model)
            if fault:  # answer, but only after the client has given up
                time.sleep(self.server.faults.delay)
            if self.server.latency:
                time.sleep(self.server.latency)
            answer = backend.answer(question, image)
        except (BadRequest, json.JSONDecodeError) as e:
            return self._error(400, str(e))
        except Exception as e:  # a judge bug must give a 500 the client can report, not a dropped socket
            log.exception("judge failed on a request")
            return self._error(500, f"judge error: {type(e).__name__}: {e}", "server_error")
        fmt = body.get("response_format") or {}
        as_json = isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object")
        wrap = as_json and not getattr(backend, "answers_json", False)  # a planner's answer is its JSON
        self._send(200, completion(json.dumps({"answer": answer}) if wrap else answer, model))

    def _fault(self, kind: str, model: str) -> None:
        """Reply with fault `kind` (FAULTS) instead of an answer."""
        if kind == "429":
            data = json.dumps({"error": {"message": "rate limited (injected)", "type": "rate_limit_error"}})
            self.send_response(429)
            self.send_header("Retry-After", f"{self.server.faults.retry_after:g}")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data.encode())
        elif kind == "500":
            self._error(500, "judge error (injected)", "server_error")
        elif kind == "truncated":
            data = json.dumps(completion(json.dumps({"answer": "3"}), model)).encode()[:40]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif kind == "schema":
            self._send(200, completion(json.dumps({"verdict": "maybe", "answer": 3}), model))
        elif kind == "empty":
            self._send(200, completion("", model))
        else:  # refusal
            self._send(200, completion(None, model, refusal="I'm sorry, I can't help with that."))

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= MAX_BODY:
            self.rfile.read(length)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # listen backlog: socketserver's default of 5 drops the SYNs of a client opening dozens of connections
    # at once, and each dropped one waits a 1 s retransmission (measured: 33 images/s at concurrency 32
    # with 200 ms latency, where 32 / 0.2 s = 160 is the bound)
    request_queue_size = socket.SOMAXCONN
    backends: dict[str, Backend]
    faults: FaultPlan
    token: str | None = None
    latency = 0.0  # seconds added to every chat answer
    requests = 0
    _lock = threading.Lock()

    def count_request(self) -> None:
        """Count one served chat request."""
        with self._lock:
            self.requests += 1


class _Server6(_Server):
    address_family = socket.AF_INET6


def is_loopback(host: str) -> bool:
    """Whether `host` names a loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextmanager
def serving(httpd: ThreadingHTTPServer, poll_interval: float = 0.1) -> Iterator[str]:
    """Serve `httpd` on a daemon thread in this process; yields its loopback base URL, shuts down on exit."""
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def make_server(host: str = "127.0.0.1", port: int = 8765, allow_remote: bool = False,
                models: tuple[str, ...] = DEFAULT_MODELS, faults: FaultPlan | None = None,
                token: str | None = None, latency: float = 0.0) -> ThreadingHTTPServer:
    """A bound (not yet serving) judge server for `models`; non-loopback hosts need allow_remote=True and
    a `token`, which every request must then bring as `Authorization: Bearer <token>`; `latency` seconds
    are added to every chat answer."""
    if not latency >= 0:
        raise ValueError(f"latency {latency!r}: seconds added to each answer, must be >= 0")
    if not is_loopback(host) and not allow_remote:
        raise ValueError(f"refusing to bind {host!r}: the judge server listens on loopback only "
                         f"(use 127.0.0.1, or --allow-remote if you really mean to expose it)")
    if not is_loopback(host) and not token:
        raise ValueError(f"refusing to bind {host!r} without a token: set the environment variable "
                         f"{TOKEN_ENV} (clients send it as their API key)")
    backends = {}  # fail at start-up, not on a request; "alias=backend" serves a backend under another id
    for m in models:
        alias, _, name = m.partition("=")
        backends[alias] = make_backend(name or alias)
    httpd = (_Server6 if ":" in host else _Server)((host, port), Handler)
    httpd.backends = backends
    httpd.faults = faults or FaultPlan()
    httpd.token = token
    httpd.latency = float(latency)
    return httpd


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exit_with(httpd, pid: int, every: float = 0.5) -> None:
    """Shut the server down once process `pid` is gone (a run killed with -9 cannot stop its server)."""
    parent = os.getppid()  # when `pid` is the parent, reparenting also says it died (even as a zombie)

    def watch():
        while _pid_alive(pid) and os.getppid() == parent:
            time.sleep(every)
        log.info("process %d is gone: judge server stopping", pid)
        httpd.shutdown()

    threading.Thread(target=watch, daemon=True, name="exit-with").start()


def serve(host: str = "127.0.0.1", port: int = 8765, port_file: str | Path | None = None,
          allow_remote: bool = False, exit_with: int | None = None, faults: FaultPlan | None = None,
          token: str | None = None, latency: float = 0.0, models: tuple[str, ...] = DEFAULT_MODELS) -> None:
    """Serve `models` until interrupted (or until process `exit_with` ends); writes the bound port to
    `port_file` once listening."""
    from ..store import atomic_write_text

    httpd = make_server(host, port, allow_remote, models=models, faults=faults, token=token, latency=latency)
    if exit_with:
        _exit_with(httpd, exit_with)
    bound = httpd.server_address[1]
    if port_file:
        atomic_write_text(port_file, str(bound))
    log.info("judge server (%s) listening on http://%s:%d/v1", ", ".join(httpd.backends), host, bound)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        log.info("judge server stopped")
    finally:
        httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    """`compseed serve-judge` / `python -m compseed_lib.judge.server`."""
    p = argparse.ArgumentParser(prog="compseed serve-judge",
                                description="OpenAI-compatible judge server answering with the exact "
                                            "mini-world judge (model miniworld-exact) and planning "
                                            "regions with the rule-based mini-world planner "
                                            "(model miniworld-planner).")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (loopback unless --allow-remote)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback interface")
    p.add_argument("--exit-with", type=int, metavar="PID", help="stop when process PID ends")
    p.add_argument("--fault-rate", type=float, default=0.0, help="share of chat requests given a fault (testing)")
    p.add_argument("--fault-mix", default=",".join(FAULTS), help=f"comma-separated kinds from {FAULTS}")
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument("--fault-delay", type=float, default=2.0, help="seconds a 'timeout' fault waits")
    p.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of a '429' fault, seconds")
    p.add_argument("--latency", type=float, default=0.0,
                   help="seconds added to every chat answer (a remote API's round trip; benchmarks)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="comma-separated model ids to serve, e.g. miniworld-exact,coco-detector (the offline "
                        "detectors need the `detector` extra; see judge/backends/detector.py); ALIAS=ID serves "
                        "backend ID under the model id ALIAS, e.g. gpt-4o=rehearsal-vlm to rehearse a paper "
                        "config on loopback")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request (debug)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        faults = FaultPlan(args.fault_rate, tuple(k for k in args.fault_mix.split(",") if k), args.fault_seed,
                           args.fault_delay, args.retry_after)
        serve(args.host, args.port, args.port_file, args.allow_remote, args.exit_with, faults,
              os.environ.get(TOKEN_ENV) or None, args.latency, tuple(m for m in args.models.split(",") if m))
    except (ValueError, OSError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
