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
