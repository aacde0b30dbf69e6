"""An OpenAI-compatible judge server on loopback: HTTP and the chat-completions protocol only.

Speaks just enough of the chat-completions protocol for `openai.OpenAI(...).chat.completions.create`
with an image: the last user message holds the question text and a data-URL image (PNG/JPEG).
  GET  /v1/models             -> {"object": "list", "data": [{"id": "miniworld-exact", ...}]}
  POST /v1/chat/completions   -> a chat.completion whose content is "3" / "yes" / "no", or
                                 {"answer": "..."} as JSON when response_format asks for JSON
  GET  /stats                 -> {"requests": n} (chat requests served; for tests)
Only the standard library (ThreadingHTTPServer). Each model id is served by a backend
(`judge/backends/`: the exact mini-world judge today) chosen by the request's `model`. Binds loopback
only unless --allow-remote. Responses go out without Nagle's delay (TCP_NODELAY), so a kept-alive
connection does not wait for the client's delayed ACK.

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .backends import Backend, make_backend

log = logging.getLogger(__name__)
DEFAULT_MODELS = ("miniworld-exact",)
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


def split_message(body: dict) -> tuple[str, Image.Image]:
    """(question text, image) from the last user message of a chat-completions request body."""
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
    if len(urls) != 1:
        raise BadRequest(f"the last user message must hold exactly one image_url part, found {len(urls)}")
    return " ".join(texts).strip(), decode_image(urls[0])


def completion(content: str, model: str) -> dict:
    """A chat.completion response object."""
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


class Handler(BaseHTTPRequestHandler):
    """Routes /v1/models, /v1/chat/completions and /stats; `server.backends` do the work."""

    server_version = "compseed-judge/0.1"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # one response is several writes: never wait for a delayed ACK

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

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "compseed"} for m in self.server.backends]})
        elif path == "/stats":
            self._send(200, {"requests": self.server.requests})
        elif path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        else:
            self._error(404, f"unknown path {path!r}", "not_found_error")

    def do_POST(self) -> None:  # noqa: N802
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
            question, image = split_message(body)
            answer = self.server.backends[model].answer(question, image)
        except (BadRequest, json.JSONDecodeError) as e:
            return self._error(400, str(e))
        except Exception as e:  # a judge bug must give a 500 the client can report, not a dropped socket
            log.exception("judge failed on a request")
            return self._error(500, f"judge error: {type(e).__name__}: {e}", "server_error")
        fmt = body.get("response_format") or {}
        as_json = isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object")
        self._send(200, completion(json.dumps({"answer": answer}) if as_json else answer, model))

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= MAX_BODY:
            self.rfile.read(length)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    backends: dict[str, Backend]
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


def make_server(host: str = "127.0.0.1", port: int = 8765, allow_remote: bool = False,
                models: tuple[str, ...] = DEFAULT_MODELS) -> ThreadingHTTPServer:
    """A bound (not yet serving) judge server for `models`; non-loopback hosts need allow_remote=True."""
    if not is_loopback(host) and not allow_remote:
        raise ValueError(f"refusing to bind {host!r}: the judge server listens on loopback only "
                         f"(use 127.0.0.1, or --allow-remote if you really mean to expose it)")
    backends = {m: make_backend(m) for m in models}  # fail at start-up, not on a request
    httpd = (_Server6 if ":" in host else _Server)((host, port), Handler)
    httpd.backends = backends
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
          allow_remote: bool = False, exit_with: int | None = None) -> None:
    """Serve until interrupted (or until process `exit_with` ends); writes the bound port to `port_file`
    once listening."""
    from ..store import atomic_write_text

    httpd = make_server(host, port, allow_remote)
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
                                            "mini-world judge.")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (loopback unless --allow-remote)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback interface")
    p.add_argument("--exit-with", type=int, metavar="PID", help="stop when process PID ends")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request (debug)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve(args.host, args.port, args.port_file, args.allow_remote, args.exit_with)
    except (ValueError, OSError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
