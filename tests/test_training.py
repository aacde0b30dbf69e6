"""The shared training loop: schedule, per-step seeds, EMA, checkpoint retention, resume equal to an
uninterrupted run, and kill -9 at any moment."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from compseed_lib.training import LoopConfig, Trainer, batch_generator, latest_checkpoint, lr_at

REPO = Path(__file__).resolve().parents[1]
W_TRUE = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _loss(step, g, m):
    x = torch.randn(16, 4, generator=g)
    err = torch.nn.functional.mse_loss(m["net"](x), x @ W_TRUE)
    return err, {"loss": err.item(), "step_seen": float(step)}


def _trainer(tmp, steps, **kw):
    net = _model()
    cfg = LoopConfig(steps=steps, lr=5e-2, warmup=3, checkpoint_every=4, keep_checkpoints=2, log_every=2, **kw)
    return Trainer({"net": net}, ema=["net"], params=net.parameters(), cfg=cfg, work_dir=tmp, device="cpu")


def _weights(t):
    return {k: v.clone() for k, v in t.raw["net"].state_dict().items()}


def test_schedule_and_per_step_generators():
    cfg = LoopConfig(lr=1.0, warmup=4)
    assert [lr_at(cfg, s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    a, b = batch_generator(cfg, 7), batch_generator(cfg, 7)
    assert torch.equal(torch.randn(3, generator=a), torch.randn(3, generator=b))
    assert not torch.equal(torch.randn(3, generator=batch_generator(cfg, 8)),
                           torch.randn(3, generator=batch_generator(cfg, 7)))


def test_training_learns_keeps_two_checkpoints_and_records_the_loss(tmp_path):
    t = _trainer(tmp_path, steps=40)
    history = t.run(_loss, progress=False)
    assert [h[0] for h in history] == list(range(2, 41, 2))
    assert history[-1][1] < history[0][1] / 2  # it learns
    assert all(len(h) == 4 and h[3] == pytest.approx(h[0] - 1.5) for h in history)  # metric means per interval
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step_0000036", "step_0000040"]
    files = sorted(p.name for p in latest_checkpoint(tmp_path / "checkpoints").iterdir())
    assert files == ["ema_net.safetensors", "net.safetensors", "optimizer.safetensors", "state.json"]
    assert not list((tmp_path / "checkpoints").rglob("*.pt")) and not list((tmp_path / "checkpoints").rglob("*.bin"))


def test_ema_lags_the_weights_and_is_exact_when_they_stand_still(tmp_path):
    t = _trainer(tmp_path / "a", steps=30)
    start = _weights(t)
    t.run(_loss, progress=False)
    raw = _weights(t)
    t.use_ema()
    ema = _weights(t)
    dist = lambda a, b: sum(float((a[k] - b[k]).norm()) for k in a)  # noqa: E731
    assert 0 < dist(ema, start) < dist(raw, start)  # the EMA moved, but less than the weights
    still = Trainer({"net": _model()}, ema=["net"], params=_model().parameters(),  # optimises other params
                    cfg=LoopConfig(steps=5, checkpoint_every=5), work_dir=tmp_path / "b", device="cpu")
    before = _weights(still)
    still.run(lambda s, g, m: (sum(p.sum() for p in m["net"].parameters()) * 0 + torch.ones((), requires_grad=True),
                               {}), progress=False)
    still.use_ema()
    assert all(torch.equal(before[k], _weights(still)[k]) for k in before)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    full = _trainer(tmp_path / "full", steps=12)
    full.run(_loss, progress=False)
    first = _trainer(tmp_path / "split", steps=8)  # stops at 8 (checkpoint at 8)
    first.run(_loss, progress=False)
    second = _trainer(tmp_path / "split", steps=12)
    assert second.resume() and second.step == 8
    second.run(_loss, progress=False)
    a, b = _weights(full), _weights(second)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.history == [h[:2] + [b_h[2]] + h[3:] for h, b_h in zip(second.history, full.history)]
    full.use_ema()
    second.use_ema()
    assert all(torch.equal(_weights(full)[k], _weights(second)[k]) for k in a)


KILL_SCRIPT = """
import sys, time, torch
sys.path.insert(0, sys.argv[2])
from test_training import _trainer, _loss
def slow(step, g, m):
    time.sleep(0.05)
    return _loss(step, g, m)
t = _trainer(sys.argv[1], steps=int(sys.argv[3]))
t.resume()
t.run(slow, progress=False)
"""


# ~15 s: a training loop killed with -9 at random moments, each restart a new process.
def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_weights(tmp_path):
    steps = 24
    ref = _trainer(tmp_path / "ref", steps=steps)
    ref.run(_loss, progress=False)
    work = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng, reached = random.Random(0), 0
    for _ in range(3):  # each round: wait for a new checkpoint, then kill at a random moment after it
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(work), str(REPO / "tests"), str(steps)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            latest = latest_checkpoint(work / "checkpoints")
            if latest is not None and int(latest.name.split("_")[1]) > reached:
                reached = int(latest.name.split("_")[1])
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.25))  # mid-step or mid-save
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    done = latest_checkpoint(work / "checkpoints")
    assert done is not None and json.loads((done / "state.json").read_text())["step"] < steps
    t = _trainer(work, steps=steps)
    t.resume()
    t.run(_loss, progress=False)
    a, b = _weights(ref), _weights(t)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list((work / "checkpoints").glob(".tmp*"))
