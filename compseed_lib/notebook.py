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

import logging
import os
import sys
import warnings
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
    try:
        from transformers.utils import logging as tlog

        tlog.get_logger().addFilter(DropNotices())
        for h in tlog.get_logger().handlers:
            h.addFilter(DropNotices())
        if os.environ.get(EVENTS_ENV):
            tlog.disable_progress_bar()
    except ImportError:
        pass
    if os.environ.get(EVENTS_ENV):
        from diffusers.utils import logging as dlog

        dlog.disable_progress_bar()  # "Loading pipeline components" bars would only clutter the report
    warnings.filterwarnings("ignore", message=".*requires torchvision.*")
    return root
