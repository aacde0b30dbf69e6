"""Ctrl-C for the `compseed` program: one SIGINT ends it within seconds, a second one at once.

Python turns SIGINT into KeyboardInterrupt only when the process *starts* with SIGINT at its default
disposition. A program started from a non-interactive shell in the background (`make test &`, CI
runners, `nohup`), or by a parent that ignores SIGINT, inherits SIGINT *ignored*, and then Ctrl-C or
`kill -INT` does nothing at all: the run goes on (this is why the Ctrl-C test failed only in full-suite
runs started in the background). `install()` therefore sets the program's own handler, whatever it
inherited:
- the first SIGINT raises KeyboardInterrupt in the main thread (the chain turns it into its one-line
  "interrupted" error, stops the notebook's kernel and releases the run's lock) and arms a watchdog:
  if the program is still alive `GRACE` seconds later (a kernel that will not stop, a blocked
  library), the watchdog prints the same one line and leaves;
- a second SIGINT leaves at once.
Leaving early kills this process's child processes (notebook kernels run in sessions of their own, so
the terminal's Ctrl-C does not reach them; their own children, such as a local judge server, watch
their parent and stop with it) and removes the run locks this process holds.

Usage (the CLI does this first thing):
    interrupt.install()
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

GRACE = 6.0  # seconds from the first SIGINT to a forced exit
EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a program ended by Ctrl-C
MESSAGE = "compseed: interrupted; finished work is kept and the same command resumes it"
_state = {"count": 0}
_held: set[str] = set()  # lock files this process holds (store.run_lock registers them): removed on leaving


def hold(path) -> None:
    """Register a lock file to remove if the program has to leave without its normal release."""
    _held.add(str(path))


def release(path) -> None:
    """The lock file was released normally."""
    _held.discard(str(path))


def process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process from /proc/PID/stat (Linux); None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
    return (fields[0], int(fields[1])) if len(fields) > 1 else None


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    state = process_state(pid)
    return state is not None and state[0] != "Z"


def children(pid: int | None = None) -> list[int]:
    """Pids of the live direct children of `pid` (this process by default), from /proc (Linux)."""
    pid = os.getpid() if pid is None else pid
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    out = []
    for name in entries:
        state = process_state(int(name)) if name.isdigit() else None
        if state is not None and state[1] == pid and state[0] != "Z":
            out.append(int(name))
    return out


def _kill_children() -> None:
    """SIGKILL every child process and, for those leading a session of their own (kernels), its group."""
    for pid in children():
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def leave_now(message: str = MESSAGE) -> None:
    """Print `message`, stop child processes, remove held run locks, and exit with 130 — no cleanup that
    could wait on anything, and no import (a Ctrl-C during an import leaves that module half made)."""
    if message:
        try:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 (a closed or broken stderr must not stop the exit)
            pass
    _kill_children()
    for path in list(_held):
        try:
            os.unlink(path)
        except OSError:
            pass
    os._exit(EXIT_CODE)


def _watchdog(grace: float) -> None:
    time.sleep(grace)
    leave_now(MESSAGE + f" (stopped after {grace:.0f} s of waiting for the interrupted work to end)")


def _on_sigint(signum, frame) -> None:
    _state["count"] += 1
    if _state["count"] > 1:
        leave_now(MESSAGE + " (interrupted twice: left at once)")
    threading.Thread(target=_watchdog, args=(GRACE,), daemon=True, name="compseed-interrupt").start()
    raise KeyboardInterrupt


def install() -> None:
    """Make SIGINT end this program (see the module doc), even if it was started with SIGINT ignored."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)
