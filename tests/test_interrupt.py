"""Ctrl-C ends `compseed` at every moment: one SIGINT ends the program within 10 s with one line and
exit 130, nothing is left running (kernels, judge servers) and no lock file stays; the same command
then resumes the finished work; a second SIGINT ends it at once.

Every program here is started with SIGINT *ignored*, as a background job of a non-interactive shell
(CI, `make test &`) starts it: Python then never installs its own SIGINT handler, and before the fix
the program went on after Ctrl-C (the Ctrl-C test failed only in full-suite runs started that way).
The signal goes to the whole process group, as a terminal's Ctrl-C does.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from compseed_lib.chain import CHAIN, notebook_of
from compseed_lib.interrupt import alive, children
from compseed_lib.store import Run, sha256_file

LIMIT = 10.0  # seconds from SIGINT to the program's exit


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start(*args, env=None) -> subprocess.Popen:
    env = {**os.environ, **(env or {})}
    env.pop("COMPSEED_EVENTS", None)
    return subprocess.Popen([sys.executable, "-m", "compseed_lib.cli", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_ignore_sigint)


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _handles_sigint(pid: int) -> bool:
    """The program installed its SIGINT handler (bit 2 of SigCgt in /proc/PID/status)."""
    try:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))


def _process_running(fragment: str):
    return lambda proc, seen: any(fragment in _cmdline(p) for p in _descendants(proc.pid))


def interrupt_when(proc: subprocess.Popen, ready, runs: Path | None = None, twice: bool = False,
                   limit: float = LIMIT, timeout: float = 300) -> str:
    """Wait until `ready(proc, seen)`, then Ctrl-C the program's group (twice: two SIGINTs 0.2 s apart);
    check it ends within `limit` s with exit 130, one line, nothing left running and no lock. Its stderr."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while not ready(proc, seen):
        seen |= _descendants(proc.pid)
        assert proc.poll() is None, f"the program ended before the moment: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.02)
    seen |= _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    t0 = time.monotonic()
    if twice:
        time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=limit + 20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        tail = proc.communicate()[1][-3000:]
        raise AssertionError(f"still running {limit + 20:.0f} s after Ctrl-C: {tail}") from None
    took = time.monotonic() - t0
    assert proc.returncode == 130, stderr[-3000:]
    assert took <= limit, f"took {took:.1f} s to end after Ctrl-C"
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("compseed: ") and "interrupted" in last, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    deadline = time.monotonic() + 5  # a kernel's or judge server's own watcher notices within a second
    while any(map(alive, seen)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [f"{p}: {_cmdline(p)}" for p in seen if alive(p)]
    assert not left, f"left running after Ctrl-C: {left}"
    if runs is not None:
        assert not list(runs.glob(".*.lock")), "the run's lock file was left behind"
    return stderr


@pytest.fixture
def books(tmp_path):
    """A copy of the stage notebooks whose 01_generate prints 'working' and sleeps in its cell."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name in {notebook_of(step) for step in CHAIN}:
        shutil.copy(REPO / "notebooks" / f"{name}.ipynb", folder)
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "p", "metadata": {"tags": ["parameters"]},
                     "outputs": [], "source": 'run_dir = "runs/x"\nstage = "base"\nsplit = "train"'},
                    {"cell_type": "code", "execution_count": None, "id": "c", "metadata": {}, "outputs": [],
                     "source": "import time\nprint('working', flush=True)\ntime.sleep(120)"}],
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    (folder / "01_generate.ipynb").write_text(json.dumps(nb))
    return folder


def _working(report: Path):
    return lambda proc, seen: report.is_file() and "working" in report.read_text()


@pytest.mark.parametrize("moment", ["handler installed", "kernel starting", "inside a cell"])
def test_one_ctrl_c_ends_the_chain(smoke_copy, books, tmp_path, moment):
    runs, sets = smoke_copy
    report = tmp_path / "r" / "smoke" / "01_generate.ipynb"
    ready = {"handler installed": lambda proc, seen: _handles_sigint(proc.pid),
             "kernel starting": _process_running("ipykernel"),
             "inside a cell": _working(report)}[moment]
    proc = _start("run", "configs/smoke.yaml", *sets, "--only", "01_generate", "--reports", str(tmp_path / "r"),
                  env={"COMPSEED_NOTEBOOKS": str(books)})
    stderr = interrupt_when(proc, ready, runs)
    if moment == "inside a cell":
        assert stderr.strip().splitlines()[-1].startswith("compseed: error: 01_generate interrupted"), stderr
        assert report.is_file()  # the executed notebook, up to the interrupt, is kept


def test_a_second_ctrl_c_ends_it_at_once(smoke_copy, books, tmp_path):
    runs, sets = smoke_copy
    report = tmp_path / "r" / "smoke" / "01_generate.ipynb"
    proc = _start("run", "configs/smoke.yaml", *sets, "--only", "01_generate", "--reports", str(tmp_path / "r"),
                  env={"COMPSEED_NOTEBOOKS": str(books)})
    interrupt_when(proc, _working(report), runs, twice=True, limit=3.0)


# ~30 s: 120 images, interrupted and then finished by the same command (two kernels).
def test_ctrl_c_while_images_are_written_keeps_them_and_the_same_command_resumes(smoke_copy, tmp_path):
    runs, sets = smoke_copy
    args = ["run", "configs/smoke.yaml", *sets, "--only", "01_generate", "--stage", "more", "--set",
            "generate.seeds=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]", "--set", "generate.batch_size=1",
            "--reports", str(tmp_path / "r")]
    images = runs / "smoke" / "images" / "more"
    interrupt_when(_start(*args), lambda proc, seen: images.is_dir() and any(images.glob("*.png")), runs)
    run = Run.open(runs / "smoke")
    kept = run.ledger.images("more")
    for row in kept.itertuples():  # every row written before the interrupt names a whole image
        assert sha256_file(run.root / row.path) == row.sha256
    res = subprocess.run([sys.executable, "-m", "compseed_lib.cli", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    done = run.ledger.images("more")
    assert len(done) == 10 * 12 and set(kept.sha256) <= set(done.sha256)
    for row in done.itertuples():
        assert sha256_file(run.root / row.path) == row.sha256


# ~45 s: generation and judging notebooks, interrupted and then finished by the same command (four kernels).
def test_ctrl_c_while_the_local_judge_server_starts(smoke_copy, tmp_path):
    runs, sets = smoke_copy
    args = ["run", "configs/smoke.yaml", *sets, "--only", "01_generate,02_judge", "--stage", "judged",
            "--set", "generate.seeds=[5, 6]", "--reports", str(tmp_path / "r")]  # new images: the judge is asked
    interrupt_when(_start(*args), _process_running("compseed_lib.judge.server"), runs)
    res = subprocess.run([sys.executable, "-m", "compseed_lib.cli", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(Run.open(runs / "smoke").ledger.judgements("judged")) == 10 * 2


# ~20 s: a fine-tune started, interrupted and resumed: two processes that load the pipeline.
def test_ctrl_c_inside_compseed_finetune_and_the_same_command_resumes(smoke_copy):
    runs, sets = smoke_copy
    shutil.rmtree(runs / "smoke" / "finetune")
    args = ["finetune", "configs/smoke.yaml", *sets, "--arm", "qk", "--set", "finetune.steps=60",
            "--set", "finetune.checkpoint_every=2"]
    checkpoints = runs / "smoke" / "finetune" / "qk"
    interrupt_when(_start(*args), lambda proc, seen: any(checkpoints.glob("**/checkpoints/step_*")), runs)
    res = subprocess.run([sys.executable, "-m", "compseed_lib.cli", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0 and "qk: " in res.stdout, res.stderr[-3000:]
    assert "resumed from" in res.stderr


def test_the_watchdog_ends_a_program_whose_work_ignores_the_interrupt(tmp_path):
    """Work that swallows KeyboardInterrupt and goes on: the program still ends GRACE s after Ctrl-C,
    with the one line, and its child processes are stopped with it."""
    code = ("import subprocess, sys, time\n"
            "from compseed_lib import interrupt\n"
            "interrupt.GRACE = 1.0\n"
            "interrupt.install()\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
            "print('ready', flush=True)\n"
            "try:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=_ignore_sigint)
    assert proc.stdout.readline().strip() == "ready"
    interrupt_when(proc, lambda p, seen: bool(children(p.pid)), limit=5.0)
