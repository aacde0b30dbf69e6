"""Batched, resumable generation: one PNG and one ledger row per (prompt, seed) job.

Inputs: a `Run`, a stage name, a pipeline and its info dict from `pipelines.load_pipeline`, jobs from
`make_jobs(prompts, seeds)`, and a `GenerateConfig` (steps, guidance, size, batch size).
Outputs: `images/<stage>/<prompt_id>_s<seed:06d>.png` and a row per image in the run's ledger
(settings, relative path, sha256); `generate` returns the stage's rows as a DataFrame.

What a seed means: each seed's initial noise is drawn alone on its own generator, so the
*initial noise* of (prompt, seed) is bit-identical whatever the batch size, batch order or process; the
same generator (advanced past the initial noise) is handed to the pipeline, so stochastic samplers draw
their step noise per seed too. Batches may mix prompts. The decoded *pixels* are equal only up to float
kernels: CPU matrix kernels block their sums by batch size, so a batch of 16 or 64 makes some images
differ from batch 1 by 1/255 in a few pixels (measured on the mini-world model, 128 images, 10 steps:
20 files differ at batch 16, 5 at batch 64, never by more than 1/255). File hashes can therefore differ
between batch sizes. Nothing relies on them being equal: the ledger records each file's own hash,
resume compares a file with the hash written for it, and a judgement belongs to the hash it judged (an
image made again, by any batch size, is judged again).

Speed (measured by `compseed bench`, reports/bench/): one pipeline call per batch (classifier-free
guidance's two halves already go through the denoiser as one batch in diffusers); each distinct prompt's
text states are encoded once per run and handed to the pipeline, with PixArt's masked padding cut to the
batch's longest prompt (`pipelines.PromptStates`); PNG encoding, hashing, file writes and the batch's
ledger rows run on a writer thread while the next batch denoises; on CPU the pipeline runs on
`generate.threads` torch threads (default: half the cores, divided among the local processes), because
on a shared machine extra threads made the same batch 3x slower and erratic; `generate.compile: true`
compiles the denoiser (a one-off cost per process and batch shape).

Resume: a job is skipped when its row and file exist and the file's sha256 matches the row; a file
that does not match (or has no row) is regenerated. PNGs are written atomically, rows after them,
so a run killed at any point and started again ends with every image exactly once. A stage keeps one
set of settings: asking for other steps/guidance/size/... in an existing stage is refused.

Usage:
    pipe, info = pipelines.load_pipeline(cfg.model)
    jobs = make_jobs(prompts.for_config(cfg.prompts), cfg.generate.seeds)
    df = generate(run, "base", pipe, info, jobs, cfg.generate)
    # many GPUs: `accelerate launch script.py`, calling generate_distributed(...) with the same arguments
"""
from __future__ import annotations

import io
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from . import pipelines
from .config import GenerateConfig, check_generate, check_seeds
from .progress import bar as progress_bar
from .prompts import Prompt
from .runtime import default_threads, torch_threads  # noqa: F401 (generation's thread share; named here too)
from .store import Ledger, Run, atomic_write_bytes, check_safe_name, image_filename, sha256_bytes, sha256_file

log = logging.getLogger(__name__)
SETTINGS = ("model", "sampler", "steps", "guidance", "height", "width", "generator_device", "dtype")


@dataclass(frozen=True)
class Job:
    """One image to make: a prompt under a seed."""

    prompt: Prompt
    seed: int


def make_jobs(prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Job]:
    """Every (prompt, seed) pair, prompt-major (all seeds of the first prompt first)."""
    seeds = check_seeds(seeds)
    ids = [p.id for p in prompts]
    dup = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dup:
        raise ValueError(f"duplicate prompt ids {dup[:5]}: each prompt may appear once")
    return [Job(p, s) for p in prompts for s in seeds]


def seed_draw(seed: int, shape: tuple[int, ...], generator_device: str | torch.device):
    """(noise of one seed in float32, its generator advanced past that draw)."""
    gen = torch.Generator(generator_device).manual_seed(seed)
    return torch.randn(shape, generator=gen, device=generator_device, dtype=torch.float32), gen


def seed_noise(seeds: Sequence[int], shape: tuple[int, ...], generator_device: str | torch.device = "cpu",
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Initial noise (B, C, h, w): each seed drawn alone in float32 on its own generator, then moved."""
    return torch.stack([seed_draw(s, tuple(shape), generator_device)[0] for s in seeds]).to(device, dtype)


# ------------------------------------------------------------------ checks
def stage_settings(info: dict, cfg: GenerateConfig) -> dict:
    """The settings every row of a stage shares (the ledger's columns)."""
    return dict(model=info["model"], sampler=info["sampler"], steps=int(cfg.steps),
                guidance=float(cfg.guidance), height=int(cfg.height), width=int(cfg.width),
                generator_device=info["generator_device"], dtype=info["dtype"])


def check_stage_settings(run: Run, stage: str, existing: pd.DataFrame, settings: dict) -> None:
    """Refuse to add images made with other settings to a stage that already has rows."""
    old, new = [], []
    for key in SETTINGS:
        for value in existing[key].dropna().unique() if len(existing) else []:
            same = math.isclose(float(value), settings[key]) if key == "guidance" else \
                str(value) == str(settings[key])
            if not same:
                old.append(f"{key}={value}")
                new.append(f"{key}={settings[key]}")
                break
    if old:
        raise ValueError(f"stage {stage!r} in {run.root} was generated with {', '.join(old)}; you asked for "
                         f"{', '.join(new)}: write to a new stage (compseed run <config> --stage NAME) or a new "
                         f"run (--set name=NEW)")


def _check_inputs(stage: str, jobs: Sequence[Job], cfg: GenerateConfig, shard) -> tuple[int, int]:
    check_safe_name(stage, "stage")
    check_generate(cfg, seeds=False)
    keys = [(j.prompt.id, j.seed) for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate (prompt, seed) jobs: build them with make_jobs")
    if jobs:
        check_seeds(list(dict.fromkeys(j.seed for j in jobs)))
    k, n = shard if shard is not None else (0, 1)
    if not (isinstance(k, int) and isinstance(n, int) and 0 <= k < n):
        raise ValueError(f"bad shard {shard!r}: expected (index, count) with 0 <= index < count")
    return k, n


def _remove_stale_temps(stage_dir: Path, names: set[str]) -> None:
    """Delete temp files a killed run left for this shard's images (other shards' are left alone)."""
    if not stage_dir.is_dir():
        return
    for f in stage_dir.iterdir():
        if f.name.startswith(".") and f.name.endswith(".tmp") and ".png." in f.name:
            if f.name[1:f.name.rfind(".png.") + 4] in names:
                log.info("removing %s left by an interrupted run", f.name)
                f.unlink(missing_ok=True)


def pending_jobs(run: Run, stage: str, jobs: Sequence[Job], existing: pd.DataFrame) -> list[Job]:
    """Jobs whose row or file is missing, or whose file's sha256 does not match its row."""
    done = {(r.prompt_id, int(r.seed)): r.sha256 for r in existing.itertuples()}
    todo = []
    for job in jobs:
        sha = done.get((job.prompt.id, job.seed))
        path = run.image_path(stage, job.prompt.id, job.seed)
        if sha is None:
            todo.append(job)  # never made, or killed between the PNG and its row
        elif not path.is_file():
            log.warning("%s: ledger row but no file; regenerating", path)
            todo.append(job)
        elif sha256_file(path) != sha:  # a matching hash means the bytes we wrote, so it opens
            log.warning("%s: file does not match its ledger sha256 (changed or corrupt); regenerating", path)
            todo.append(job)
    return todo


# ------------------------------------------------------------------ generation
def _denoise_batch(pipe, batch: Sequence[Job], cfg: GenerateConfig, shape: tuple[int, int, int], info: dict,
                   extra: dict, states: pipelines.PromptStates) -> list:
    """One pipeline call for a batch: the PIL images, in the batch's order."""
    return render(pipe, info, [j.prompt.text for j in batch], [j.seed for j in batch], cfg.steps, cfg.guidance,
                  cfg.height, cfg.width, extra, shape, states)


def write_batch(run: Run, stage: str, batch: Sequence[Job], images: list, settings: dict, ledger: Ledger) -> None:
    """PNGs written atomically, then the batch's ledger rows in one transaction."""
    rows = []
    for job, image in zip(batch, images, strict=True):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
        path = run.image_path(stage, job.prompt.id, job.seed)
        atomic_write_bytes(path, data)
        p = job.prompt
        rows.append(dict(stage=stage, prompt_id=p.id, seed=job.seed, prompt=p.text, kind=p.kind,
                         category=p.category, target=p.target, **settings,
                         path=path.relative_to(run.root).as_posix(), sha256=sha256_bytes(data)))
    ledger.add_images(rows)


def render(pipe, info: dict, texts: Sequence[str], seeds: Sequence[int], steps: int, guidance: float, height: int,
           width: int, extra: dict | None = None, shape: tuple[int, int, int] | None = None,
           states: pipelines.PromptStates | None = None) -> list:
    """One pipeline call, in memory: PIL images of (text, seed) pairs from the engine's per-seed noise and
    generators (the pixels `generate` writes for the same settings and batch). `states`: the run's
    text-state cache (each distinct prompt encoded once; a new one per call when None)."""
    device, dtype = torch.device(info["device"]), getattr(torch, info["dtype"])
    gen_device = device if info["generator_device"] == "cuda" else torch.device("cpu")
    shape = shape or pipelines.latent_shape(pipe, height, width)
    drawn = [seed_draw(s, shape, gen_device) for s in seeds]
    latents = torch.stack([noise for noise, _ in drawn]).to(device, dtype)  # (B, C, h, w)
    extra = pipelines.call_kwargs(pipe) if extra is None else extra
    text = (states or pipelines.PromptStates(pipe))(list(texts), guidance)
    with torch.inference_mode():
        return pipe(**text, latents=latents, generator=[gen for _, gen in drawn],
                    num_inference_steps=steps, guidance_scale=guidance, height=height, width=width,
                    output_type="pil", **extra).images


def generate(run: Run, stage: str, pipe, info: dict, jobs: Sequence[Job], cfg: GenerateConfig,
             progress: bool = True, shard: tuple[int, int] | None = None, ledger: Ledger | None = None
             ) -> pd.DataFrame:
    """Make every job's image not already made (this shard's share); return the stage's image rows.
    `ledger`: where the rows go (a shard's `run.part_ledger`; rows already there count as made)."""
    # 1. Check inputs before any pipeline work
    k, n = _check_inputs(stage, jobs, cfg, shard)
    shape = pipelines.latent_shape(pipe, cfg.height, cfg.width)
    settings = stage_settings(info, cfg)
    out = ledger or run.ledger
    existing = run.ledger.images(stage)
    if ledger is not None:
        existing = pd.concat([existing, ledger.images(stage)]).drop_duplicates(["prompt_id", "seed"], keep="last")
    check_stage_settings(run, stage, existing, settings)
    # 2. This shard's jobs (index % n == k); clear what a killed run left, skip what is done
    mine = list(jobs)[k::n]
    _remove_stale_temps(run.stage_dir(stage), {image_filename(j.prompt.id, j.seed) for j in mine})
    todo = pending_jobs(run, stage, mine, existing)
    for problem in pipelines.prompt_problems(pipe, [j.prompt.text for j in todo]):
        log.warning("%s", problem)
    # 3. Generate batch by batch; rows go in after their PNGs
    #    on a writer thread: batch i is written while batch i + 1 denoises (one batch in flight at most)
    extra, states = pipelines.call_kwargs(pipe), pipelines.PromptStates(pipe)
    if cfg.compile and todo:
        pipelines.compile_denoiser(pipe)
    start = time.perf_counter()
    writing: tuple[Future, int] | None = None
    with progress_bar(total=len(todo), desc=f"generate {stage}", unit="img", disable=not progress or not todo) as bar, \
            torch_threads(cfg.threads, info["device"]), ThreadPoolExecutor(1, thread_name_prefix="png") as writer:
        for i in range(0, len(todo) + cfg.batch_size, cfg.batch_size):
            batch = todo[i:i + cfg.batch_size]
            images = _denoise_batch(pipe, batch, cfg, shape, info, extra, states) if batch else []
            if writing is not None:
                writing[0].result()  # the writer's error is raised here, in the caller
                bar.update(writing[1])
            writing = ((writer.submit(write_batch, run, stage, batch, images, settings, out), len(batch))
                       if batch else None)
    # 4. Summary
    seconds = time.perf_counter() - start
    log.info("stage %s%s: generated %d, skipped %d, %.1f s, %.2f images/s", stage,
             f" shard {k}/{n}" if n > 1 else "", len(todo), len(mine) - len(todo), seconds,
             len(todo) / seconds if todo and seconds > 0 else 0.0)
    return out.images(stage)


def generate_distributed(run: Run, stage: str, pipe, info: dict, jobs: Sequence[Job], cfg: GenerateConfig,
                         progress: bool = True) -> pd.DataFrame:
    """`generate` under `accelerate launch` (processes on one or many machines sharing the run folder): each
    process takes its shard on its own device and writes its own ledger part; the main process merges the
    parts by key, first those a killed launch left (so each shard resumes), then the new ones."""
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes == 1:
        run.merge_parts()  # what a killed launch's shards made
        return generate(run, stage, pipe, info, jobs, cfg, progress=progress)
    on_accelerator = torch.device(info["device"]).type == state.device.type != "cpu"
    if on_accelerator and str(state.device) != info["device"]:  # one GPU per process
        pipe.to(state.device)
        info = {**info, "device": str(state.device)}
    merge_parts_on_main(run, state)
    generate(run, stage, pipe, info, jobs, cfg, progress=progress and state.is_local_main_process,
             shard=(state.process_index, state.num_processes),
             ledger=run.part_ledger(state.process_index, state.num_processes))
    merge_parts_on_main(run, state)
    return run.ledger.images(stage)


def merge_parts_on_main(run: Run, state) -> None:
    """Every process waits; the main process folds the ledger parts into the ledger; every process waits."""
    state.wait_for_everyone()
    if state.is_main_process:
        n = run.merge_parts()
        if n:
            log.info("merged %d ledger rows from the shards' parts", n)
    state.wait_for_everyone()
