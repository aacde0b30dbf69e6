"""Run directory and ledger: file names, atomic writes, keyed rows, concurrent writers."""
import json
import multiprocessing as mp

import pytest

from compseed_lib.config import config_from_dict
from compseed_lib.store import Ledger, Run, atomic_write_bytes, image_filename


def test_image_filename_from_prompt_id_and_seed():
    assert image_filename("n6e108f3920", 7) == "n6e108f3920_s000007.png"
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="bad prompt id"):
            image_filename(bad, 1)
    with pytest.raises(ValueError, match="bad seed"):
        image_filename("n1", -1)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "b.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["b.bin"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_follows_the_users_umask(tmp_path, umask, mode):
    import os
    import stat

    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / f"f{umask}.png", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / f"f{umask}.png").stat().st_mode) == mode


def test_run_create_writes_resolved_config_with_versions(tmp_path):
    cfg = config_from_dict({"runs_dir": str(tmp_path), "name": "r1"}, ["generate.steps=3"])
    run = Run.create(cfg)
    assert run.config().generate.steps == 3
    assert "torch" in (run.root / "config.yaml").read_text()
    with pytest.raises(FileNotFoundError, match="no run at"):
        Run.open(tmp_path / "missing")


def _writer(path, start):
    led = Ledger(path)
    for i in range(start, start + 50):
        led.add_images([{"stage": "s", "prompt_id": f"p{i % 60}", "seed": i // 60, "sha256": "x"}])


def test_rows_are_keyed_and_concurrent_writers_do_not_duplicate(tmp_path):
    path = tmp_path / "ledger.sqlite"
    Ledger(path)
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, s)) for s in (0, 25, 50)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rows = Ledger(path).images("s")
    assert len(rows) == 100  # indices 0..99, overlapping ranges written once each
    assert not rows.duplicated(["prompt_id", "seed"]).any()
    led = Ledger(path)
    row = {"stage": "s", "prompt_id": "p1", "seed": 0, "judge_model": "m", "question": "q",
           "image_sha256": "h", "raw_answer": "3", "parsed_answer": "3", "correct": 1}
    led.add_judgements([row, row | {"raw_answer": "4"}])
    assert led.cached_answer("h", "m", "q") == "3"
    assert led.cached_answer("h", "other", "q") is None


def test_drop_stage_forgets_one_stage_its_files_and_judgements_and_nothing_else(tmp_path):
    run = Run.create(config_from_dict({"runs_dir": str(tmp_path), "name": "r"}))
    for stage in ("eval_qk", "eval_lora"):
        for seed in (0, 1):
            path = run.image_path(stage, "p1", seed)
            atomic_write_bytes(path, b"png")
            run.ledger.add_images([{"stage": stage, "prompt_id": "p1", "seed": seed, "sha256": "x",
                                    "path": str(path.relative_to(run.root))}])
            run.ledger.add_judgements([{"stage": stage, "prompt_id": "p1", "seed": seed, "judge_model": "m",
                                        "question": "q", "image_sha256": "x", "raw_answer": "3",
                                        "parsed_answer": "3", "correct": 1}])
    assert run.drop_stage("eval_qk") == 2
    assert run.ledger.images("eval_qk").empty and run.ledger.judgements("eval_qk").empty
    assert not (run.root / "images" / "eval_qk").exists()
    assert len(run.ledger.images("eval_lora")) == 2 and len(run.ledger.judgements("eval_lora")) == 2
    assert run.image_path("eval_lora", "p1", 1).is_file()
    assert run.drop_stage("eval_qk") == 0  # nothing left: nothing to drop, no error
    with pytest.raises(ValueError, match="stage"):
        run.drop_stage("../images")


# ---------------------------------------------------------------------------- one writer per run
HOLD_SCRIPT = """
import sys, time
from compseed_lib.store import run_lock
with run_lock(sys.argv[1], "holder"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_run_on_the_same_directory_is_refused_naming_the_holder_and_a_dead_ones_lock_is_taken(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from compseed_lib.store import RunInUse, lock_path, run_lock

    repo = Path(__file__).resolve().parents[1]
    run_dir = tmp_path / "runs" / "smoke"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(run_dir)], cwd=repo, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUse, match=rf"run .*smoke is in use by process {holder.pid} \(holder on "):
            with run_lock(run_dir):
                pass
        # the CLI: one line naming the process, a nonzero exit, at once, and nothing written in the run
        t0 = time.monotonic()
        cli = subprocess.run([sys.executable, "-m", "compseed_lib.cli", "run", str(repo / "configs/smoke.yaml")],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert cli.returncode != 0 and time.monotonic() - t0 < 60
        assert f"in use by process {holder.pid}" in cli.stderr and "Traceback" not in cli.stderr
        assert not run_dir.exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # dies holding the lock: its file stays, its flock goes
        holder.wait()
        holder.stdout.close()
    assert lock_path(run_dir).is_file()
    with run_lock(run_dir) as path:  # taken over at once
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not lock_path(run_dir).exists()  # released: removed
