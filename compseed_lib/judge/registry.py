"""Judges by name: each maps to an OpenAI-compatible endpoint, a model and where its API key lives
(the regional-prompting planner is reached the same way: "miniworld-planner", or gpt-4o / a vLLM server).

Inputs: a `config.JudgeConfig` (registry name plus optional base_url / model / api_key_env overrides).
Outputs: a resolved `JudgeSpec`; `open_endpoint(cfg)` yields (base_url, model, api_key), starting
the kit's own judge server as a subprocess on loopback when the judge is local and no base_url is set.
API keys come only from the environment variable the spec names (never from a config value).

Usage:
    spec = resolve(cfg.judge)
    with open_endpoint(cfg.judge) as (base_url, model, api_key):
        ...  # openai.AsyncOpenAI(base_url=base_url, api_key=api_key)
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..config import JudgeConfig, check_judge

log = logging.getLogger(__name__)
LOCAL_KEY = "not-needed"  # loopback servers ignore the key, but the client must send one
START_TIMEOUT = 60.0  # seconds to wait for the local server to answer /v1/models


@dataclass(frozen=True)
class JudgeSpec:
    """A judge endpoint: base_url None on a local spec means 'start our own server'."""

    name: str
    base_url: str | None
    model: str
    api_key_env: str | None
    local: bool
    key_required: bool = True  # False: an unset api_key_env falls back to a dummy key (vLLM)


JUDGES: dict[str, JudgeSpec] = {
    "miniworld-local": JudgeSpec("miniworld-local", None, "miniworld-exact", None, local=True,
                                 key_required=False),
    # the rule-based mini-world planner of regional prompting (methods/planner.py), served beside the judge
    "miniworld-planner": JudgeSpec("miniworld-planner", None, "miniworld-planner", None, local=True,
                                   key_required=False),
    "gpt-4o": JudgeSpec("gpt-4o", "https://api.openai.com/v1", "gpt-4o", "OPENAI_API_KEY", local=False),
    "vllm-qwen2-vl": JudgeSpec("vllm-qwen2-vl", "http://127.0.0.1:8000/v1", "Qwen/Qwen2-VL-7B-Instruct",
                               "VLLM_API_KEY", local=False, key_required=False),
    "vllm-cogvlm2": JudgeSpec("vllm-cogvlm2", "http://127.0.0.1:8000/v1", "THUDM/cogvlm2-llama3-chat-19B",
                              "VLLM_API_KEY", local=False, key_required=False),
}


def resolve(cfg: JudgeConfig) -> JudgeSpec:
    """The registry entry named by `cfg.name` with cfg's base_url / model / api_key_env applied."""
    if cfg.name not in JUDGES:
        raise ValueError(f"unknown judge {cfg.name!r}: use one of {sorted(JUDGES)} "
                         f"(or any of them with judge.base_url / judge.model overrides)")
    spec = JUDGES[cfg.name]
    changes = {k: v for k, v in (("base_url", cfg.base_url), ("model", cfg.model),
                                 ("api_key_env", cfg.api_key_env)) if v is not None}
    check_judge(cfg)  # the value rules live in config.py
    if changes.get("base_url") is not None:
        changes["base_url"] = changes["base_url"].rstrip("/")
    return dataclasses.replace(spec, **changes)


def check_answerable(spec: JudgeSpec, prompts: list) -> None:
    """Refuse, before any work, prompts the judge cannot answer: the kit's own local judge knows only the
    mini-world objects. (A remote judge is assumed to answer anything it is asked.)"""
    if not spec.local or spec.base_url is not None:
        return
    from .backends.miniworld import known_objects

    known = known_objects()
    unknown = sorted({o.name for p in prompts for o in (p.obj, p.obj_b) if o is not None
                      and o.name.lower() not in known and o.plural.lower() not in known})
    if unknown:
        world = sorted({p.world for p in prompts})
        raise ValueError(f"judge {spec.name!r} is the exact mini-world judge and knows only the mini-world "
                         f"objects ({', '.join(sorted(set(known.values())))}); the prompts (world "
                         f"{', '.join(world)}) ask about {', '.join(unknown[:6])}{' …' if len(unknown) > 6 else ''}: "
                         f"use prompts.world: miniworld, or a judge that sees any object "
                         f"(judge.name: gpt-4o, vllm-qwen2-vl, vllm-cogvlm2)")


def api_key(spec: JudgeSpec) -> str:
    """The API key from the environment variable the spec names; a dummy key where none is needed."""
    if spec.api_key_env:
        value = os.environ.get(spec.api_key_env)
        if value:
            return value
        if spec.key_required:
            raise ValueError(f"judge {spec.name!r} needs an API key in the environment variable "
                             f"{spec.api_key_env} (set it in the shell; keys never go in configs or "
                             f"notebook parameters)")
    elif spec.key_required and not spec.local:
        raise ValueError(f"judge {spec.name!r} needs judge.api_key_env naming the variable that holds "
                         f"its key")
    return LOCAL_KEY


def _get_json(url: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # loopback only: our own server
        return json.loads(r.read())


def check_reachable(spec: JudgeSpec, key: str, timeout: float = 5.0) -> None:
    """For a judge at a URL: fail within `timeout` seconds, naming the URL, if nothing answers there or it
    rejects the key (a local judge is started per stage and needs no check)."""
    import urllib.error
    import urllib.request

    from .errors import JudgeUnavailable

    if spec.base_url is None:
        return
    req = urllib.request.Request(spec.base_url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout):
            return
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise JudgeUnavailable(f"judge server at {spec.base_url} rejected the API key ({e.code}): check the "
                                   f"environment variable named by judge.api_key_env") from None
        return  # some compatible servers have no /models: the chat call decides
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise JudgeUnavailable(f"judge server at {spec.base_url} is not reachable ({reason}): start it (for the "
                               f"mini world: `compseed serve-judge`) or fix judge.base_url") from None


@contextmanager
def start_local_server(timeout: float = START_TIMEOUT, args: Sequence[str] = ()) -> Iterator[str]:
    """Start `python -m compseed_lib.judge.server` on a free loopback port (with extra command-line `args`,
    e.g. ["--latency", "0.2"]); yields its /v1 base URL."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="compseed-judge-") as tmp:
        port_file = Path(tmp) / "port"
        err_path = Path(tmp) / "stderr.log"
        with open(err_path, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "compseed_lib.judge.server", "--host", "127.0.0.1",
                                     "--port", "0", "--port-file", str(port_file), "--exit-with", str(os.getpid()),
                                     *args],
                                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
        try:
            base_url = _wait_ready(proc, port_file, err_path, timeout)
            log.info("started local judge server (pid %d) at %s", proc.pid, base_url)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.debug("local judge server (pid %d) stopped", proc.pid)


def _wait_ready(proc: subprocess.Popen, port_file: Path, err_path: Path, timeout: float) -> str:
    """Poll until the server wrote its port and answers /v1/models; a clear error otherwise."""
    def stderr_tail() -> str:
        text = err_path.read_text(errors="replace").strip() if err_path.is_file() else ""
        return text[-3000:] or "(no output)"

    deadline = time.monotonic() + timeout
    last = "no port file yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the local judge server exited with code {proc.returncode} before it "
                               f"was ready; its output:\n{stderr_tail()}")
        text = port_file.read_text().strip() if port_file.is_file() else ""
        if text.isdigit():
            base_url = f"http://127.0.0.1:{int(text)}/v1"
            try:
                data = _get_json(base_url + "/models")
                if data.get("data"):
                    return base_url
            except (OSError, ValueError) as e:
                last = f"{type(e).__name__}: {e}"
        time.sleep(0.05)
    raise RuntimeError(f"the local judge server did not answer /v1/models within {timeout:.0f} s "
                       f"(last: {last}); its output:\n{stderr_tail()}")


@contextmanager
def open_endpoint(cfg: JudgeConfig) -> Iterator[tuple[str, str, str]]:
    """Yield (base_url, model, api_key) for the configured judge, starting our server when local."""
    spec = resolve(cfg)
    key = api_key(spec)
    if spec.base_url is None:
        if not spec.local:
            raise ValueError(f"judge {spec.name!r} has no base_url: set judge.base_url")
        with start_local_server() as base_url:
            yield base_url, spec.model, key
    else:
        yield spec.base_url, spec.model, key
