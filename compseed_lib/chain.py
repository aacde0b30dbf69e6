"""The notebook chain: `compseed run <config>` executes notebooks/00_… in order with papermill.

Inputs: a config file (configs/*.yaml) and optional `key=value` overrides.
Outputs: the run directory `runs/<name>/` (see store.py) and executed notebooks plus copies of the
run's figures in `reports/<name>/`.

Usage:
    from compseed_lib.chain import run_chain
    run_chain("configs/mini.yaml", overrides=["generate.steps=2"])
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

from .config import ConfigError, RunConfig, load_config

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
# Stage notebooks in order; each reads only what earlier ones wrote to the run directory.
CHAIN = ["00_prompts", "01_generate", "02_judge", "03_mine_seeds", "04_seed_reliability"]


class ChainError(RuntimeError):
    """A notebook of the chain failed; the message names it and the library's error."""


def check_inputs(cfg: RunConfig) -> None:
    """Fail before any model work when the config names something that cannot exist."""
    from . import prompts
    from .store import check_safe_name

    check_safe_name(cfg.name, "run name")
    prompts.folder(cfg.prompts.world)
    if cfg.prompts.split not in prompts.SPLITS:
        raise ConfigError(f"prompts.split {cfg.prompts.split!r}: use one of {list(prompts.SPLITS)}")
    g = cfg.generate
    if not g.seeds or any(s < 0 for s in g.seeds) or len(set(g.seeds)) != len(g.seeds):
        raise ConfigError(f"generate.seeds must be distinct non-negative integers, got {g.seeds}")
    for key in ("steps", "batch_size", "height", "width"):
        if getattr(g, key) <= 0:
            raise ConfigError(f"generate.{key} must be positive, got {getattr(g, key)}")
    if g.height % 8 or g.width % 8:
        raise ConfigError(f"generate.height/width must be multiples of 8, got {g.height}x{g.width}")
    for key, ok in (("device", ("auto", "cpu", "cuda", "mps")),
                    ("dtype", ("auto", "float32", "float16", "bfloat16")),
                    ("generator_device", ("cpu", "cuda"))):
        value = getattr(cfg.model, key)
        if value not in ok and not (key == "device" and value.startswith("cuda:")):
            raise ConfigError(f"model.{key} {value!r}: use one of {list(ok)}")
    from .judge import registry

    registry.resolve(cfg.judge)


def run_chain(config: str | Path, overrides: list[str] | None = None, notebooks: list[str] | None = None,
              report_root: str | Path = "reports", stream: bool = False) -> Path:
    """Execute the chain for a config; returns the report folder. `stream` echoes notebook output."""
    import papermill as pm

    cfg = load_config(config, overrides)
    check_inputs(cfg)
    names = notebooks or CHAIN
    unknown = [n for n in names if n not in CHAIN]
    if unknown:
        raise ConfigError(f"unknown notebook(s) {unknown}: the chain is {CHAIN}")
    report_dir = Path(report_root) / cfg.name
    report_dir.mkdir(parents=True, exist_ok=True)
    # The kernel must be this interpreter (the one with compseed installed), whatever PATH says.
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    timings = {}
    for name in names:
        params = {"config": str(config), "overrides": list(overrides or [])} if name == CHAIN[0] \
            else {"run_dir": str(cfg.run_dir)}
        t0 = time.time()
        log.info("running %s", name)
        out = report_dir / f"{name}.ipynb"
        try:
            # a relative input path keeps this machine's folders out of the executed notebook
            source = os.path.relpath(NOTEBOOK_DIR / f"{name}.ipynb")
            pm.execute_notebook(source, str(out), parameters=params,
                                kernel_name="python3", cwd=os.getcwd(), progress_bar=False,
                                log_output=stream)
        except pm.PapermillExecutionError as e:
            raise ChainError(f"{name} failed: {e.ename}: {e.evalue}\n  full traceback in {out}") from None
        timings[name] = round(time.time() - t0, 1)
        log.info("%s done in %.1f s", name, timings[name])
    figures = cfg.run_dir / "figures"
    if figures.is_dir():
        shutil.copytree(figures, report_dir / "figures", dirs_exist_ok=True)
    (report_dir / "timings.txt").write_text("".join(f"{k}\t{v} s\n" for k, v in timings.items()))
    return report_dir
