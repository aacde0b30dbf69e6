"""The judge protocol: an async client on the `openai` package with bounded concurrency and retries.

Inputs: an endpoint (base_url, model, api key from `registry.open_endpoint`) and a `JudgeConfig`.
Outputs: raw answer text per (image, question); parsing is `parse.py`, ledger rows are `stage.py`.

Each request is one user message (question text + the PNG as a data URL), temperature 0, asking for
JSON {"answer": "..."} through a strict json_schema response_format; a server that rejects
response_format gets free text for the rest of the session. Timeouts, connection errors, 429 (after its
Retry-After), 5xx and malformed replies (a body that is not JSON, JSON that breaks the answer schema, an
empty answer, a refusal) are retried with exponential backoff and jitter, at most `max_retries` times;
then `JudgeFailed` (that request only: the stage records nothing for it, a rerun asks again) or, when
the server cannot be reached at all, `JudgeUnavailable`, both naming base_url and model. A malformed
reply is never turned into an answer.

Usage:
    async with JudgeClient(base_url, model, key, cfg.judge) as jc:
        await jc.check(); raw = await jc.ask(png, question)
    ask(pil_image, "How many stars are in this image? Answer with a single number.", cfg.judge)
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
import json
import logging
import random
from urllib.parse import urlparse

import openai

from ..config import JudgeConfig
from .errors import JudgeError, JudgeFailed, JudgeUnavailable  # noqa: F401 (also importable from here)
from .registry import open_endpoint

log = logging.getLogger(__name__)
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {
    "name": "judge_answer", "strict": True,
    "schema": {"type": "object", "properties": {"answer": {"type": "string"}},
               "required": ["answer"], "additionalProperties": False}}}
BACKOFF_BASE = 0.5  # seconds before the first retry; doubles each attempt, with jitter
BACKOFF_CAP = 30.0
CHECK_TIMEOUT = 10.0  # seconds for the up-front reachability check
LOCAL_CONCURRENCY = 8  # the kit's own judge (its own process) on 2 cores: 8 in flight 134 images/s, 1: 75
REMOTE_CONCURRENCY = 32  # a server or API answers many at once: 200 ms latency needs ~32 in flight for 14x
_RETRYABLE = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)


class _Malformed(Exception):
    """A reply that is not an answer: nothing is recorded from it."""


def answer_content(resp, structured: bool) -> str:
    """The answer text of a chat completion, or _Malformed naming what is wrong with it: no choices, a
    refusal, an empty answer, or (when the JSON schema was asked for) JSON content that is not
    {"answer": str}."""
    choices = getattr(resp, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise _Malformed("no choices in the reply")
    msg = getattr(choices[0], "message", None)
    content = getattr(msg, "content", None)
    if getattr(msg, "refusal", None):
        raise _Malformed(f"refusal: {msg.refusal!r}")
    if not isinstance(content, str) or not content.strip():
        raise _Malformed("empty answer")
    if structured and content.lstrip().startswith(("{", "[")):  # plain text from a server that ignored
        try:                                                     # response_format is still an answer
            obj = json.loads(content)
        except ValueError:
            raise _Malformed(f"answer is broken JSON: {content[:80]!r}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("answer"), str):
            raise _Malformed(f"answer breaks the schema {{'answer': string}}: {content[:80]!r}")
    return content


def _cause(e: BaseException) -> str:
    inner = e.__cause__ or e.__context__
    text = str(inner) if inner is not None and str(inner) else str(e)
    return text or type(e).__name__


def _is_loopback_url(url: str) -> bool:
    return (urlparse(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def run_sync(coro):
    """Run a coroutine to completion from sync code, also inside Jupyter's running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compseed-judge") as ex:
        return ex.submit(asyncio.run, coro).result()


def png_bytes(image) -> bytes:
    """PNG bytes of a PIL image."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def default_concurrency(local: bool) -> int:
    """Requests in flight when judge.concurrency is unset: few for the kit's own local judge, many for a server."""
    return LOCAL_CONCURRENCY if local else REMOTE_CONCURRENCY


class JudgeClient:
    """One judge endpoint: `check()` once, then `await ask(png, question)` from many tasks."""

    def __init__(self, base_url: str, model: str, api_key: str, cfg: JudgeConfig):
        self.base_url, self.model = base_url, model
        self.max_retries, self.timeout = cfg.max_retries, cfg.timeout
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=cfg.timeout,
                                         max_retries=0)
        self.semaphore = asyncio.Semaphore(cfg.concurrency or default_concurrency(local=False))
        self.structured = True  # False once the server rejected response_format
        self.sent = 0  # requests sent, retries included
        self.retried: dict[str, int] = {}  # retries by cause

    async def __aenter__(self) -> JudgeClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.close()

    def _where(self) -> str:
        return f"judge server at {self.base_url} (model {self.model!r})"

    def _unreachable(self, e: BaseException) -> JudgeUnavailable:
        hint = ("start it with `compseed serve-judge` or fix judge.base_url"
                if _is_loopback_url(self.base_url) else "check the network or fix judge.base_url")
        return JudgeUnavailable(f"judge server at {self.base_url} is not reachable ({_cause(e)}): {hint}")

    def _key_rejected(self, e: openai.APIStatusError) -> JudgeUnavailable:
        return JudgeUnavailable(f"{self._where()} rejected the API key ({e.status_code}): check the "
                                f"environment variable named by judge.api_key_env")

    async def check(self) -> None:
        """Fail fast if the server is down or rejects the key (GET /models with a short timeout)."""
        try:
            page = await self.client.with_options(timeout=min(self.timeout, CHECK_TIMEOUT)).models.list()
        except openai.APIConnectionError as e:
            raise self._unreachable(e) from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise self._key_rejected(e) from None
        except openai.APIStatusError as e:  # some compatible servers have no /models; the chat call decides
            log.debug("%s: GET /models gave %s; going on", self.base_url, e.status_code)
            return
        ids = [m.id for m in page.data]
        if ids and self.model not in ids:
            log.warning("%s does not list model %r (it lists %s)", self.base_url, self.model, ids[:10])

    def _backoff(self, attempt: int, e: BaseException) -> float:
        """Seconds to wait: the server's Retry-After if given, else base * 2^attempt with jitter."""
        if isinstance(e, openai.APIStatusError):
            try:
                return min(BACKOFF_CAP, max(0.0, float(e.response.headers.get("retry-after", ""))))
            except ValueError:
                pass
        return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt) * (0.5 + random.random() / 2)

    async def ask(self, image_png: bytes, question: str, mime: str = "image/png") -> str:
        """The judge's raw answer text for one image and question (retries included)."""
        url = f"data:{mime};base64,{base64.b64encode(image_png).decode('ascii')}"
        messages = [{"role": "user", "content": [{"type": "text", "text": question},
                                                 {"type": "image_url", "image_url": {"url": url}}]}]
        return await self.complete(messages, RESPONSE_FORMAT, answer_content)

    async def complete(self, messages: list[dict], response_format: dict, read):
        """`read(reply, structured)` of one chat completion (retries included): `read` raises ValueError
        (or _Malformed) for a reply it cannot use, which is retried like a malformed reply."""
        attempt = 0
        async with self.semaphore:
            while True:
                structured = self.structured
                extra = {"response_format": response_format} if structured else {}
                self.sent += 1
                try:
                    resp = await self.client.chat.completions.create(
                        model=self.model, messages=messages, temperature=0, **extra)
                except openai.BadRequestError as e:
                    text = str(e).lower()
                    if structured and ("response_format" in text or "json_schema" in text):
                        if self.structured:
                            self.structured = False
                            log.warning("%s rejects response_format json_schema; asking for free text "
                                        "for the rest of this session", self._where())
                        continue
                    raise JudgeError(f"{self._where()} rejected a request (400): {e}") from None
                except (*_RETRYABLE, openai.APIResponseValidationError, ValueError) as e:
                    # ValueError: a body that is not JSON at all (a truncated reply)
                    await self._retry_or_fail(attempt, e)
                    attempt += 1
                    continue
                except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                    raise self._key_rejected(e) from None
                except openai.NotFoundError as e:
                    raise JudgeUnavailable(f"{self._where()}: model or endpoint not found (404): {e}") \
                        from None
                except openai.APIStatusError as e:
                    raise JudgeError(f"{self._where()} answered {e.status_code}: {e}") from None
                try:
                    return read(resp, structured)
                except (_Malformed, ValueError) as e:
                    await self._retry_or_fail(attempt, e if isinstance(e, _Malformed) else _Malformed(str(e)))
                    attempt += 1

    async def _retry_or_fail(self, attempt: int, e: BaseException) -> None:
        """Wait before retry `attempt` + 1, or raise once the retries are spent: JudgeUnavailable when the
        server refused the connection, JudgeFailed (this request only) otherwise."""
        cause = "malformed reply" if isinstance(e, _Malformed) else type(e).__name__
        if attempt >= self.max_retries:
            if isinstance(e, openai.APIConnectionError) and not isinstance(e, openai.APITimeoutError):
                raise self._unreachable(e) from None
            raise JudgeFailed(f"{self._where()} kept failing after {attempt + 1} attempts "
                              f"(last: {cause}: {_cause(e)[:200]})") from None
        self.retried[cause] = self.retried.get(cause, 0) + 1
        delay = self._backoff(attempt, e)
        log.debug("%s: %s; retry %d/%d in %.2f s", self.base_url, cause, attempt + 1, self.max_retries, delay)
        await asyncio.sleep(delay)


def ask(image, question: str, cfg: JudgeConfig | None = None) -> str:
    """Ask the configured judge one question about a PIL image; the raw answer (for notebooks)."""
    cfg = cfg or JudgeConfig()
    data = png_bytes(image)

    async def one(endpoint: tuple[str, str, str]) -> str:
        async with JudgeClient(*endpoint, cfg) as jc:
            await jc.check()
            return await jc.ask(data, question)

    with open_endpoint(cfg) as endpoint:
        return run_sync(one(endpoint))
