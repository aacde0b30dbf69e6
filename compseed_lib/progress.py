"""Progress bars and log lines that reach the terminal from inside a papermill kernel.

A notebook run by `compseed run` executes in a kernel process whose output papermill stores in the
executed notebook; a tqdm bar there never reaches the terminal, and papermill reprints the kernel's
stderr as its own warnings. So the chain opens an *event file* and names it in `COMPSEED_EVENTS`;
inside the kernel, `bar()` and `EventHandler` (installed by `notebook.setup()`) append JSON lines to it
(bar progress, log records), and the CLI's `EventRelay` tails the file: one live tqdm bar per long step
on the terminal, and each log record re-emitted under its own logger name and level.
Interactively (no `COMPSEED_EVENTS`), `bar()` is tqdm.auto's bar, a widget in JupyterLab.

Usage (library):
    with progress.bar(total=len(todo), desc="generate base", unit="img") as b:
        b.update(len(batch))
Usage (CLI):
    with EventRelay() as relay:   # relay.env: {COMPSEED_EVENTS: file} for the kernels started inside
        run_notebooks()
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

EVENTS_ENV = "COMPSEED_EVENTS"
_EVERY = 0.25  # seconds between progress events of one bar


def _events_path() -> Path | None:
    value = os.environ.get(EVENTS_ENV)
    return Path(value) if value else None


def emit(event: dict) -> None:
    """Append one event to the chain's event file, if there is one (errors are ignored: never fatal)."""
    path = _events_path()
    if path is None:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event, default=str) + "\n")
    except OSError:
        pass


class RelayedBar:
    """A progress bar that reports to the chain's event file instead of drawing in the notebook."""

    def __init__(self, total: int | None, desc: str, unit: str):
        self.id, self.total, self.desc, self.unit = uuid.uuid4().hex[:8], total, desc, unit
        self.n, self._start, self._last = 0, time.monotonic(), 0.0
        self._send(done=False)

    def _send(self, done: bool) -> None:
        emit({"type": "bar", "id": self.id, "desc": self.desc, "unit": self.unit, "n": self.n,
              "total": self.total, "elapsed": time.monotonic() - self._start, "done": done})

    def update(self, n: int = 1) -> None:
        """Advance by n; reports at most every quarter second."""
        self.n += n
        now = time.monotonic()
        if now - self._last >= _EVERY:
            self._last = now
            self._send(done=False)

    def close(self) -> None:
        """Report the final count."""
        if self.id:
            self._send(done=True)
            self.id = ""

    def __enter__(self) -> RelayedBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bar(total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False):
    """A progress bar for long library work: relayed to the terminal under `compseed run`, else tqdm."""
    from tqdm.auto import tqdm

    if disable or _events_path() is None:
        return tqdm(total=total, desc=desc, unit=unit, disable=disable)
    return RelayedBar(total, desc, unit)


class EventHandler(logging.Handler):
    """A logging handler that sends records to the chain's event file (level and logger name kept)."""

    def emit(self, record: logging.LogRecord) -> None:  # noqa: D102 (logging.Handler's interface)
        try:
            emit({"type": "log", "name": record.name, "level": record.levelno, "msg": record.getMessage()})
        except Exception:  # a log line must never break the work it reports on
            self.handleError(record)


class EventRelay:
    """CLI side: create the event file and show its events live; `env` names the file for the processes
    that write to it (the chain passes it to its kernels' environment; this process's is left alone)."""

    def __init__(self, show: bool = True, poll: float = 0.1):
        self.show, self.poll = show, poll
        self._dir = tempfile.TemporaryDirectory(prefix="compseed-events-")
        self.path = Path(self._dir.name) / "events.jsonl"
        self.path.touch()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="compseed-events", daemon=True)
        self._bars: dict = {}
        self._offset = 0
        self.env = {EVENTS_ENV: str(self.path)}

    def __enter__(self) -> EventRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._drain()
        for b in self._bars.values():
            b.close()
        self._bars.clear()
        self._dir.cleanup()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            self._drain()

    def _drain(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return
        complete = chunk[:chunk.rfind("\n") + 1]  # a line still being written waits for the next poll
        self._offset += len(complete.encode("utf-8"))
        for line in complete.splitlines():
            try:
                self._show(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue

    def _show(self, ev: dict) -> None:
        if not self.show:
            return
        if ev["type"] == "log":
            logging.getLogger(ev["name"]).log(int(ev["level"]), "%s", ev["msg"])
        elif ev["type"] == "bar":
            from tqdm import tqdm

            b = self._bars.get(ev["id"])
            if b is None:
                b = self._bars[ev["id"]] = tqdm(total=ev["total"], desc=ev["desc"], unit=ev["unit"],
                                                mininterval=0.5, dynamic_ncols=True, leave=True)
                b.start_t -= float(ev.get("elapsed", 0.0))  # the rate counts from the kernel's start
            b.update(int(ev["n"]) - b.n)
            if ev["done"]:
                b.close()
                del self._bars[ev["id"]]


class TqdmLoggingHandler(logging.StreamHandler):
    """The CLI's log handler: writes through tqdm so log lines do not break a live bar."""

    def emit(self, record: logging.LogRecord) -> None:  # noqa: D102
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)
