"""Shared fixtures: a private pipeline cache, the suite's one smoke chain, the CLI as a subprocess."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE_KEY = "sk-compseed-fake-5ec7e7d0c0ffee"  # the judge's key for the chain run: must appear nowhere it wrote


def cli(*args, cwd=REPO, env=None, timeout=600):
    """`python -m compseed_lib.cli ARGS` in the repository, its output captured."""
    env = {**os.environ, **(env or {})}
    env.pop("COMPSEED_EVENTS", None)
    return subprocess.run([sys.executable, "-m", "compseed_lib.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def smoke_chain(tmp_path_factory):
    """The whole chain on configs/smoke.yaml through the CLI, once per test session (90 s alone: twelve
    notebooks, each a kernel that imports torch and diffusers), shared by the workers of `pytest -n`
    (the first builds it under a file lock, the others wait and reuse it):
    (root, the --set arguments that address its run, its report folder, the CLI's stderr). Tests that
    change the run work on a copy of it as it was built (`smoke_copy`)."""
    import json
    import shutil

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "smoke-chain"
    sets = ["--set", f"runs_dir={root / 'runs'}", "--set", "name=smoke", "--set", "judge.api_key_env=COMPSEED_FAKE_KEY"]
    with FileLock(f"{root}.lock"):
        done = root / "built.json"
        if not done.is_file():
            shutil.rmtree(root, ignore_errors=True)
            res = cli("run", "configs/smoke.yaml", *sets, "--reports", str(root / "reports"),
                      env={"COMPSEED_FAKE_KEY": FAKE_KEY})
            assert res.returncode == 0, res.stderr
            shutil.copytree(root / "runs" / "smoke", root / "pristine" / "smoke")
            done.write_text(json.dumps({"stderr": res.stderr}))
        stderr = json.loads(done.read_text())["stderr"]
    return root, sets, root / "reports" / "smoke", stderr


@pytest.fixture
def smoke_copy(smoke_chain, tmp_path):
    """A private copy of the smoke chain's run: (runs folder, --set arguments that address it)."""
    import shutil

    root, *_ = smoke_chain
    shutil.copytree(root / "pristine" / "smoke", tmp_path / "runs" / "smoke")
    sets = ["--set", f"runs_dir={tmp_path / 'runs'}", "--set", "name=smoke",
            "--set", "judge.api_key_env=COMPSEED_FAKE_KEY"]
    return tmp_path / "runs", sets


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private pipeline cache, so tests build the tiny pipelines fresh and never touch ~/.cache."""
    root = tmp_path_factory.mktemp("cache")
    old = os.environ.get("COMPSEED_CACHE")
    os.environ["COMPSEED_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("COMPSEED_CACHE")
    else:
        os.environ["COMPSEED_CACHE"] = old


def kill_9(proc) -> bool:
    """SIGKILL `proc` if it still runs, reap it, and fail with its stderr if it had ended with an error.
    True when it was killed (False: it had finished on its own)."""
    import os
    import signal

    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    assert proc.returncode in (0, -signal.SIGKILL), err[-2000:]
    return killed


# The longest files first, in this order, so that `pytest -n 2 --dist loadfile --no-loadscope-reorder`
# (make test) starts them at once on both workers instead of leaving one for the end: the SD 2.1
# rehearsal on one worker, the smoke chain's tests on the other, then the PixArt rehearsal and the
# Ctrl-C tests and the effect chain, then the rest in file order.
_FIRST = ("test_paper_sd21.py", "test_chain.py", "test_paper_pixart.py", "test_interrupt.py", "test_effect.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return _FIRST.index(name) if name in _FIRST else len(_FIRST)

    items.sort(key=rank)
