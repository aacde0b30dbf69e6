"""The notebook chain: `compseed run <config>` executes notebooks/00_… in order with papermill.

Inputs: a config file (configs/*.yaml), optional `key=value` overrides, optionally which notebooks and
which image stage.
Outputs: the run directory `runs/<name>/` (see store.py) and executed notebooks plus copies of the
run's figures in `reports/<name>/`.

One config per run, and it is the one in force. Before anything is written, `start_run`:
1. checks every value (`config.validate`) and every resource (`preflight`: prompt files and lists,
   the model folder or name, the judge's API key, whether the judge can answer the world's
   questions, notebooks that need earlier stages' output);
2. compares the config with the run's finished work: a change that would alter images already made in
   the stages this run writes (model, steps, guidance, size, dtype, generator device) is refused with
   what differs and what to do (a new run name, or `--stage NAME` for a new image stage);
3. only then records the config in `runs/<name>/config.yaml`, which every notebook reads.
A bad input therefore leaves no run directory and no report behind.

Usage:
    from compseed_lib.chain import run_chain
    run_chain("configs/mini.yaml", overrides=["generate.steps=2"], notebooks=["01_generate"])
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from .config import ConfigError, RunConfig, eval_judge, load_config, validate
from .notebook import ROOT_ENV

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_ENV = "COMPSEED_NOTEBOOKS"  # a folder of your own copies of the stage notebooks (default: the kit's)
# Steps in order; each runs one notebook (the name before a "_heldout" suffix) and reads only what
# earlier steps wrote to the run directory. The held-out steps run 01/02 on the other prompt split.
CHAIN = ["00_prompts", "01_generate", "02_judge", "03_mine_seeds", "01_generate_heldout", "02_judge_heldout",
         "04_seed_reliability", "05_build_dataset", "06_finetune", "07_evaluate", "08_paper_figures",
         "09_compare_methods"]
METHODS_STEP = "09_compare_methods"  # runs only when the config has a `methods` section (configs/methods.yaml)
HELDOUT = "_heldout"
DEFAULT_STAGE = "base"
# What a step needs from the run directory: (what, of which stage: main or held-out, the step that makes it).
NEEDS = {"02_judge": [("images", False, "01_generate")], "03_mine_seeds": [("judgements", False, "02_judge")],
         "02_judge_heldout": [("images", True, "01_generate_heldout")],
         "04_seed_reliability": [("judgements", False, "02_judge"), ("judgements", True, "02_judge_heldout")],
         "05_build_dataset": [("top seeds", False, "03_mine_seeds")],
         "06_finetune": [("dataset", False, "05_build_dataset")],
         "07_evaluate": [("top seeds", False, "03_mine_seeds"), ("fine-tunes", False, "06_finetune")],
         "08_paper_figures": [("judgements", False, "02_judge")],
         "09_compare_methods": [("top seeds", False, "03_mine_seeds")]}
# Settings that decide an image's pixels: a stage keeps one value of each.
IMAGE_SETTINGS = ("model", "steps", "guidance", "height", "width", "generator_device", "dtype")


class ChainError(RuntimeError):
    """A notebook of the chain failed; the message names it, the cause and the executed notebook."""


class ChainInterrupted(ChainError):
    """The chain was stopped with Ctrl-C."""


def notebook_dir() -> Path:
    """Where the stage notebooks are read from: `$COMPSEED_NOTEBOOKS`, else the kit's notebooks/."""
    return Path(os.environ.get(NOTEBOOKS_ENV) or REPO_ROOT / "notebooks")


def heldout_stage(stage: str) -> str:
    """Image stage of the held-out prompts that go with `stage` ('base' -> 'heldout')."""
    return "heldout" if stage == DEFAULT_STAGE else f"{stage}{HELDOUT}"


def heldout_split(cfg: RunConfig) -> str:
    """The prompt split the held-out steps use: the one seeds are not mined on."""
    from .prompts import other_split

    return other_split(cfg.prompts.split)


def steps_for(cfg: RunConfig) -> list[str]:
    """The chain's steps for a config: every step, 09_compare_methods only with a `methods` section."""
    return [n for n in CHAIN if n != METHODS_STEP or cfg.methods is not None]


def notebook_of(step: str) -> str:
    """The notebook a chain step runs ('01_generate_heldout' -> '01_generate')."""
    return step.removesuffix(HELDOUT)


# ------------------------------------------------------------------ checks before any work
def check_inputs(cfg: RunConfig) -> list:
    """Values and resources of a config, before any model work: returns the prompts it names."""
    validate(cfg)
    return preflight(cfg)


def preflight(cfg: RunConfig) -> list:
    """Resources a config names, checked without generating: prompts, model, judge. Returns the prompts."""
    from . import prompts, sources
    from .judge import registry

    ps = prompts.for_config(cfg.prompts)
    for kind in cfg.prompts.kinds:
        if not any(p.kind == kind for p in ps):
            raise ConfigError(f"prompts: world {cfg.prompts.world!r}, split {cfg.prompts.split!r} has no "
                              f"{kind} prompts (prompts.kinds asks for {list(cfg.prompts.kinds)})")
    # steps that draw prompts under their category's top seeds need seeds mined for every such category
    needs = []
    if cfg.dataset.prompts == "all":
        needs.append((prompts.for_dataset(cfg), "without mined seeds, and dataset.prompts 'all' needs seeds "
                      "for every category of the training prompts: raise prompts.limit, or set dataset.prompts "
                      "to 'mining'"))
    if "top_seeds" in cfg.evaluate.arms:
        needs.append((prompts.for_config(cfg.prompts, split=heldout_split(cfg)), "of the held-out prompts without "
                      "mined seeds, which the top_seeds arm needs: raise prompts.limit (to at least the number of "
                      "counts and of relations)"))
    for needed, why in needs:
        unmined = sorted({p.category for p in needed} - {p.category for p in ps})
        if unmined:
            raise ConfigError(f"prompts.limit: the {len(ps)} mining prompts leave categories {unmined} {why}")
    sources.check_size(cfg.model, cfg.generate.height, cfg.generate.width)  # also checks the source
    lo, hi = sources.trained_counts(cfg.model.pipeline) or (None, None)
    if lo is not None and "count" in cfg.prompts.kinds:
        outside = sorted(c for c in cfg.prompts.counts if not lo <= c <= hi)
        if outside:
            log.warning("prompts.counts %s lie outside what %s was trained on (%d to %d): expect it to "
                        "get them wrong", outside, cfg.model.pipeline, lo, hi)
    for judge_cfg in {id(j): j for j in (cfg.judge, eval_judge(cfg))}.values():
        spec = registry.resolve(judge_cfg)
        registry.api_key(spec)
        registry.check_answerable(spec, ps)
    return ps


def _existing_settings(run_root: Path, stage: str) -> tuple[int, dict]:
    """(number of images, {setting: values}) of an image stage in a run's ledger, read-only."""
    import sqlite3

    db = run_root / "ledger.sqlite"
    if not db.is_file():
        return 0, {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
    try:
        n = con.execute("SELECT COUNT(*) FROM images WHERE stage=?", (stage,)).fetchone()[0]
        values = {k: [r[0] for r in con.execute(f"SELECT DISTINCT {k} FROM images WHERE stage=?", (stage,))]
                  for k in IMAGE_SETTINGS}
    except sqlite3.DatabaseError:
        return 0, {}
    finally:
        con.close()
    return n, values


def wanted_settings(cfg: RunConfig) -> dict:
    """The image settings a config asks for, as the ledger records them (no model is loaded)."""
    from . import pipelines

    device = pipelines.resolve_device(cfg.model.device)
    dtype = str(pipelines.resolve_dtype(cfg.model.dtype, device)).removeprefix("torch.")
    model = cfg.model.pipeline + (f"@{cfg.model.revision}" if cfg.model.revision else "")
    g = cfg.generate
    return dict(model=model, steps=g.steps, guidance=float(g.guidance), height=g.height, width=g.width,
                generator_device=cfg.model.generator_device, dtype=dtype)


def conflicts(cfg: RunConfig, stages: list[str]) -> list[str]:
    """How the config differs from the finished images of `stages` in its run ('' list: compatible)."""
    want = wanted_settings(cfg)
    out = []
    for stage in stages:
        n, have = _existing_settings(cfg.run_dir, stage)
        if not n:
            continue
        diffs = []
        for key in IMAGE_SETTINGS:
            for value in have.get(key, []):
                if value is None:
                    continue
                same = math.isclose(float(value), want[key]) if key == "guidance" else str(value) == str(want[key])
                if not same:
                    diffs.append(f"{key} {value} -> {want[key]}")
                    break
        if diffs:
            out.append(f"stage {stage!r} holds {n} images made with other settings ({'; '.join(diffs)})")
    return out


def _check_needs(cfg: RunConfig, names: list[str], stage: str) -> None:
    """A step run without the one that makes its input must find that input in the run."""
    for name in names:
        for what, held, maker in NEEDS.get(name, []):
            if maker in names:
                continue
            st = heldout_stage(stage) if held else stage
            n, _ = _existing_settings(cfg.run_dir, st)
            found = {"images": n > 0, "judgements": (cfg.run_dir / "tables" / f"judgements_{st}.csv").is_file(),
                     "top seeds": (cfg.run_dir / "tables" / "top_seeds.csv").is_file(),
                     "dataset": (cfg.run_dir / "dataset" / "train" / "metadata.jsonl").is_file(),
                     "fine-tunes": (cfg.run_dir / "finetune").is_dir()}[what]
            if not found:
                raise ConfigError(f"{name} needs the {what} of stage {st!r}, and {cfg.run_dir} has none: run "
                                  f"{maker} first (compseed run <config> --only {maker},{name})")


def recorded_config(run_root: Path) -> dict | None:
    """The config a run recorded (None when the run does not exist yet)."""
    path = Path(run_root) / "config.yaml"
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    data.pop("versions", None)
    return data


def start_run(cfg: RunConfig, stage: str = DEFAULT_STAGE, notebooks: list[str] | None = None):
    """Check `cfg` (values, resources, finished work), then record it as the run's config; the `Run`."""
    from .store import Run

    check_inputs(cfg)
    names = notebooks or steps_for(cfg)
    _check_needs(cfg, names, stage)
    _check_judges_answer(cfg, names)
    clash = conflicts(cfg, [stage, heldout_stage(stage)])
    if clash:
        raise ConfigError(
            f"{cfg.run_dir}: {'; '.join(clash)}. Nothing was changed. To keep both, start a new run "
            f"(--set name={cfg.name}-2) or put the new images in a new stage of this run (--stage NAME); "
            f"to redo this run with the new settings, delete {cfg.run_dir} first.")
    old = recorded_config(cfg.run_dir)
    new = cfg.to_dict()
    if old is not None and old != new:
        changed = sorted(_diff_keys(old, new))
        log.info("run %s: config changed (%s); finished images are unaffected", cfg.name, ", ".join(changed))
    return Run.create(cfg)


JUDGING = ("02_judge", "02_judge_heldout", "05_build_dataset")  # steps that ask the run's judge


def _check_judges_answer(cfg: RunConfig, names: list[str]) -> None:
    """A judge at a URL that a chosen step will ask must answer now: within seconds, naming the URL."""
    from .judge import registry

    wanted = ([cfg.judge] if any(n in JUDGING + (METHODS_STEP,) for n in names) else []) + \
        ([eval_judge(cfg)] if "07_evaluate" in names or METHODS_STEP in names else [])
    for judge_cfg in {id(j): j for j in wanted}.values():
        spec = registry.resolve(judge_cfg)
        registry.check_reachable(spec, registry.api_key(spec))


def _diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _diff_keys(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(prefix + k)
    return out


# ------------------------------------------------------------------ running notebooks
def _kernel_manager(env: dict | None = None):
    """A kernel manager class whose kernels get this interpreter first on PATH, the project root named
    (`COMPSEED_ROOT`) and `env` in *their* environment; this process's own environment is left as it is."""
    from jupyter_client.manager import AsyncKernelManager  # nbclient's own default: its client never blocks

    extra = {"PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
             ROOT_ENV: os.getcwd(), **(env or {})}

    class CompseedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):  # `env` is one of the launch keywords start_kernel passes on
            kw["env"] = {**(kw.get("env") or os.environ), **extra}
            return await super().start_kernel(**kw)

    return CompseedKernelManager


def _params(name: str, cfg: RunConfig, stage: str, config, overrides) -> dict:
    if name == CHAIN[0]:
        return {"config": str(config), "overrides": list(overrides or []), "stage": stage}
    if name.endswith(HELDOUT):
        return {"run_dir": str(cfg.run_dir), "stage": heldout_stage(stage), "split": heldout_split(cfg)}
    if name not in ("01_generate", "02_judge", "03_mine_seeds", "04_seed_reliability"):
        return {"run_dir": str(cfg.run_dir)}
    params = {"run_dir": str(cfg.run_dir), "stage": stage}
    if name in ("01_generate", "02_judge"):
        params["split"] = cfg.prompts.split
    if name == "04_seed_reliability":
        params["heldout_stage"] = heldout_stage(stage)
    return params


def _execute(name: str, out: Path, params: dict, kernel_manager) -> None:
    """One notebook through papermill; every failure becomes a one-line `ChainError`."""
    import papermill as pm
    from nbclient.exceptions import DeadKernelError

    source = os.path.relpath(notebook_dir() / f"{notebook_of(name)}.ipynb")  # no machine paths in the copy
    kept = f"executed notebook kept at {out}"
    try:
        pm.execute_notebook(source, str(out), parameters=params, kernel_name="python3", cwd=os.getcwd(),
                            progress_bar=False, log_output=False,
                            kernel_manager_class=kernel_manager,
                            # once its last cell has run, the kernel (and any process it started: they
                            # share its process group) is killed, not asked to exit: every output is
                            # already written and papermill has the cells; a graceful exit of a kernel
                            # that imported torch cost ~1.3 s per notebook, for nothing
                            shutdown_kernel="immediate",
                            # CRITICAL: the kernel logs an ERROR when papermill's shutdown (an interrupt,
                            # then a shutdown request) meets it still busy on a loaded machine; harmless
                            extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    except pm.PapermillExecutionError as e:
        if e.ename == "KeyboardInterrupt":
            raise ChainInterrupted(f"{name} interrupted; finished work is kept and the same command "
                                   f"resumes it ({kept})") from None
        raise ChainError(f"{name} failed: {e.ename}: {e.evalue} ({kept})") from e
    except DeadKernelError as e:
        raise ChainError(f"{name} failed: the notebook's kernel died (killed by the system, most often for "
                         f"running out of memory: try a smaller generate.batch_size) ({kept})") from e
    except KeyboardInterrupt:
        raise ChainInterrupted(f"{name} interrupted; finished work is kept and the same command resumes it "
                               f"({kept})") from None
    except RuntimeError as e:  # the kernel did not start, or nbclient gave up on it
        raise ChainError(f"{name} failed: {type(e).__name__}: {e} ({kept})") from e


def run_chain(config: str | Path, overrides: list[str] | None = None, notebooks: list[str] | None = None,
              report_root: str | Path = "reports", stage: str = DEFAULT_STAGE, show: bool = True) -> Path:
    """Execute the chain for a config; returns the report folder. `show` relays progress and logs."""
    from .progress import EventRelay
    from .store import check_safe_name, run_lock

    names = notebooks or CHAIN
    unknown = [n for n in names if n not in CHAIN]
    if unknown:
        raise ConfigError(f"unknown step(s) {unknown}: the chain is {CHAIN}")
    names = [n for n in CHAIN if n in names]  # always in chain order
    try:
        check_safe_name(stage, "stage")
    except ValueError as e:
        raise ConfigError(f"--stage: {e}") from None
    cfg = load_config(config, overrides)
    if notebooks is None:
        names = steps_for(cfg)
    elif METHODS_STEP in names and cfg.methods is None:
        raise ConfigError(f"{METHODS_STEP} compares the methods of the config's `methods` section, and "
                          f"{config} has none: add `methods: {{}}` for the defaults (see configs/methods.yaml)")
    with run_lock(cfg.run_dir):  # one writer per run directory
        start_run(cfg, stage, names)  # everything checked, then the config recorded; nothing written before
        report_dir = Path(report_root) / cfg.name
        report_dir.mkdir(parents=True, exist_ok=True)
        timings = {}
        with EventRelay(show=show) as relay:
            kernels = _kernel_manager(relay.env)
            for name in names:
                t0 = time.time()
                log.info("running %s", name)
                _execute(name, report_dir / f"{name}.ipynb", _params(name, cfg, stage, config, overrides), kernels)
                timings[name] = round(time.time() - t0, 1)
                log.info("%s done in %.1f s", name, timings[name])
    figures = cfg.run_dir / "figures"
    if figures.is_dir():
        shutil.copytree(figures, report_dir / "figures", dirs_exist_ok=True)
    (report_dir / "timings.txt").write_text("".join(f"{k}\t{v} s\n" for k, v in timings.items()))
    from .report import write_report

    write_report(report_dir, cfg.run_dir, [n for n in CHAIN if (report_dir / f"{n}.ipynb").is_file()])
    return report_dir
