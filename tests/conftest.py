"""Shared fixtures."""
import os

import pytest


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
