"""What every stage notebook calls first: paths against the project root, logging, quiet libraries.

A notebook opened in JupyterLab runs with `notebooks/` as its working directory; under `compseed run`
it runs where the command was started. `setup()` makes both the same: relative paths in parameters
(`configs/mini.yaml`, `runs/mini`) resolve against the project root — the folder `compseed run` was
started in (it says so in `COMPSEED_ROOT`), else the nearest folder above the working directory that
holds `configs/` and `notebooks/`, else the folder the kit is installed from.

Process-wide settings (logging, the working directory, library log filters) are the notebook's to
decide, so they live here and never in the library modules the notebook imports.

Usage (first code cell of a notebook):
    from compseed_lib.notebook import setup
    setup()
"""
from __future__ import annotations

import importlib.abc
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from .progress import EVENTS_ENV, EventHandler

ROOT_ENV = "COMPSEED_ROOT"
KIT_ROOT = Path(__file__).resolve().parent.parent


def project_root(start: str | Path | None = None) -> Path:
    """The folder relative paths are resolved against (see module docstring)."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV])
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "configs").is_dir() and (folder / "notebooks").is_dir():
            return folder
    return KIT_ROOT


class DropNotices(logging.Filter):
    """Notices that say nothing about this run (an optional package absent, e.g. torchvision)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision" not in record.getMessage()


def _quiet_transformers(tlog) -> None:
    tlog.get_logger().addFilter(DropNotices())
    for h in tlog.get_logger().handlers:
        h.addFilter(DropNotices())


def _quiet_transformers_and_bars(tlog) -> None:
    _quiet_transformers(tlog)
    tlog.disable_progress_bar()


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a function on a module right after it is first imported (see `after_import`)."""

    def __init__(self) -> None:
        self.pending: dict[str, Callable] = {}

    def find_spec(self, name, path, target=None):
        if name not in self.pending:
            return None
        for finder in sys.meta_path:  # the spec the rest of the import system finds for it
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                run, fn = spec.loader.exec_module, self.pending.pop(name)

                def exec_module(module, run=run, fn=fn):
                    run(module)
                    fn(module)

                spec.loader.exec_module = exec_module  # this spec's own loader instance
                return spec
        return None


_HOOK = _AfterImport()


def after_import(name: str, fn: Callable) -> None:
    """Call fn(module) now if module `name` is imported, else right after its first import (a library
    setting that should not cost importing the library: transformers and diffusers pull in torch)."""
    if name in sys.modules:
        fn(sys.modules[name])
        return
    _HOOK.pending[name] = fn
    if _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def setup(level: int = logging.INFO) -> Path:
    """Change to the project root, route logging (to the terminal under `compseed run`), quiet libraries."""
    root = project_root()
    if Path.cwd().resolve() != root.resolve():
        os.chdir(root)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    handlers[0].setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if os.environ.get(EVENTS_ENV):
        handlers.append(EventHandler())
    for h in handlers:  # on our handlers: the notice may come from any logger below "transformers"
        h.addFilter(DropNotices())
    logging.basicConfig(level=level, handlers=handlers, force=True)
    for name in ("httpx", "httpx2", "httpcore", "openai"):  # one line per HTTP request would bury the output
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet = _quiet_transformers if not os.environ.get(EVENTS_ENV) else _quiet_transformers_and_bars
    after_import("transformers.utils.logging", quiet)  # now if imported, else when first imported: a
    if os.environ.get(EVENTS_ENV):  # notebook that never loads a model never pays for torch and diffusers
        # "Loading pipeline components" bars would only clutter the report
        after_import("diffusers.utils.logging", lambda dlog: dlog.disable_progress_bar())
    warnings.filterwarnings("ignore", message=".*requires torchvision.*")
    return root
