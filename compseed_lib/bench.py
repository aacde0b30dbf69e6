"""Benchmarks that state every claim as a ratio measured in one run (`compseed bench`).

Each figure is the median of >= 3 interleaved repetitions (round r runs every variant once, in an order
rotated each round, so slow spells of a shared machine fall on all variants), kept with min and max.
  generation  the kit's engine (`generate.generate`, batched) against the original loop (one pipeline
              call per image, a new torch.Generator per image, PNG saved) on the same pipeline and images;
              max pixel difference between the two; ratio at each batch size and the best one
  judging     the async client (`judge.client.JudgeClient`, default concurrency) against sequential
              blocking `openai` calls, through a loopback judge server adding `latency` seconds
  finetune    seconds per step and images/s of `finetune.train` on the mini world (cost of steps b - a)
  chain       seconds per notebook of the default chain, read from a report's timings.txt
  scaling     `generate_distributed` under `accelerate launch --cpu`: s/image for 32 -> 1,024 images and
              1 -> N processes, and how far from linear (bench/scale_generate.py)
The GPU shape benchmark is bench/gpu_sd21.py (its own JSON, merged into the table when present).

Outputs: `reports/bench/bench.json` and `reports/bench/README.md` (tables with machine, versions,
threads, date). Usage:
    compseed bench                      # the full measurement (quiet machine: tens of minutes)
    compseed bench --quick --out /tmp/b # tiny sizes, seconds (tests)
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .runtime import set_torch_threads

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


def summary(values: list[float]) -> dict:
    """median, min, max and the values themselves."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "values": [round(v, 6) for v in values]}


def interleaved(variants: dict[str, Callable[[], float]], reps: int) -> dict[str, dict]:
    """Run each variant `reps` times, one of each per round in a rotated order; each returns a rate."""
    if reps < 1:
        raise ValueError(f"reps {reps!r}: at least 1 repetition")
    names, out = list(variants), {n: [] for n in variants}
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            out[name].append(variants[name]())
    return {n: summary(v) for n, v in out.items()}


def machine() -> dict:
    """Machine, library versions, threads and date of a measurement."""
    import torch

    from .store import library_versions

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_1min_at_start": load, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "versions": {**library_versions(), "accelerate": _version("accelerate"), "openai": _version("openai")}}


def _version(pkg: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


# ------------------------------------------------------------------ (a) generation
def original_loop(pipe, jobs, cfg, out_dir: Path) -> list[np.ndarray]:
    """The original research loop: one call per image, a new generator per image, each PNG saved."""
    import torch

    from .pipelines import call_kwargs

    extra = call_kwargs(pipe)  # PixArt: keep the asked size (no resolution binning)
    images = []
    for job in jobs:
        gen = torch.Generator("cpu").manual_seed(job.seed)
        with torch.inference_mode():
            image = pipe(prompt=job.prompt.text, generator=gen, num_inference_steps=cfg.steps,
                         guidance_scale=cfg.guidance, height=cfg.height, width=cfg.width, **extra).images[0]
        image.save(out_dir / f"{job.prompt.id}_{job.seed}.png")
        images.append(np.asarray(image, dtype=np.int16))
    return images


def verdicts(jobs, images: list[np.ndarray]) -> list[bool | None] | None:
    """The mini-world exact judge's verdict (right / wrong / unreadable) on each job's image; None when
    the prompts are not mini-world ones (the exact judge cannot read them)."""
    from PIL import Image

    from .judge.backends.miniworld import MiniworldJudge
    from .judge.parse import is_correct, parse_answer
    from .judge.templates import question_for

    judge = MiniworldJudge()
    try:
        return [is_correct(j.prompt, parse_answer(j.prompt, judge.answer(question_for(j.prompt),
                                                                          Image.fromarray(im.astype(np.uint8)))))
                for j, im in zip(jobs, images, strict=True)]
    except ValueError:
        return None


def bench_generation(model: str = "miniworld", n_images: int = 64, batch_sizes=(8, 16, 32, 64), steps: int = 10,
                     reps: int = 3, threads: int = 1, guidance: float = 4.0,
                     tuned: tuple[str, ...] = ("compiled", "bfloat16", "compiled_bfloat16")) -> dict:
    """Images/s of the original loop and of the engine at each batch size (float32, eager), and of the
    engine at the largest batch size in each `tuned` form: compiled (`generate.compile`), bfloat16
    (`model.dtype`), compiled_bfloat16. Ratios to the original loop; per variant the max pixel difference
    from the original loop's images and how many of the exact judge's verdicts differ (mini-world prompts)."""
    import dataclasses

    from . import prompts
    from .config import GenerateConfig, ModelConfig
    from .generate import generate, make_jobs
    from .pipelines import load_pipeline
    from .store import Run

    set_torch_threads(threads)
    mcfg = ModelConfig(pipeline=model, device="cpu")
    pipe, info = load_pipeline(mcfg)
    n_prompts = max(1, n_images // 8)
    jobs = make_jobs(prompts.load("miniworld", "train", limit=max(1, (n_prompts + 1) // 2))[:n_prompts],
                     list(range(8)))[:n_images]
    base = GenerateConfig(steps=steps, guidance=guidance, threads=threads)
    big = max(batch_sizes)
    # variant -> (pipeline, its info, generate config)
    setups = {f"engine_batch_{b}": (pipe, info, dataclasses.replace(base, batch_size=b)) for b in batch_sizes}
    compile_s: dict[str, float] = {}
    for name in tuned:  # a pipeline of its own each (compiling changes the module in place)
        if name not in ("compiled", "bfloat16", "compiled_bfloat16"):
            raise ValueError(f"tuned variant {name!r}: use compiled, bfloat16 or compiled_bfloat16")
        p, i = load_pipeline(dataclasses.replace(mcfg, dtype="bfloat16" if "bfloat16" in name else "float32"))
        setups[f"engine_batch_{big}_{name}"] = (p, i, dataclasses.replace(base, batch_size=big,
                                                                         compile="compiled" in name))
    tmp = Path(tempfile.mkdtemp(prefix="compseed-bench-gen-"))
    last: dict = {}

    def engine(name: str) -> Callable[[], float]:
        p, i, cfg = setups[name]

        def go() -> float:
            run = Run(Path(tempfile.mkdtemp(dir=tmp)))
            t = time.perf_counter()
            df = generate(run, "bench", p, i, jobs, cfg, progress=False)
            rate = len(jobs) / (time.perf_counter() - t)
            made = {(r.prompt_id, r.seed): np.asarray(run.read_image(r), dtype=np.int16) for r in df.itertuples()}
            last[name] = [made[(j.prompt.id, j.seed)] for j in jobs]
            return rate

        return go

    def original() -> float:
        out = Path(tempfile.mkdtemp(dir=tmp))
        t = time.perf_counter()
        last["original_loop"] = original_loop(pipe, jobs, base, out)
        return len(jobs) / (time.perf_counter() - t)

    for name, (_, _, cfg) in setups.items():  # compile (each shape of a full and a last batch) outside the timing
        if cfg.compile:
            t = time.perf_counter()
            engine(name)()
            compile_s[name] = time.perf_counter() - t
    variants = {"original_loop": original, **{name: engine(name) for name in setups}}
    rates = interleaved(variants, reps)
    ref = rates["original_loop"]["median"]
    ratios = {name: rates[name]["median"] / ref for name in variants}
    plain = {b: ratios[f"engine_batch_{b}"] for b in batch_sizes}
    best_batch = max(plain, key=plain.get)
    best = max((n for n in variants if n != "original_loop"), key=ratios.get)
    judged = {name: verdicts(jobs, images) for name, images in last.items()}
    changed = {name: (None if judged[name] is None else
                      sum(a != b for a, b in zip(judged[name], judged["original_loop"], strict=True)))
               for name in variants}
    diffs = {name: int(max(np.abs(a - o).max() for a, o in zip(last[name], last["original_loop"], strict=True)))
             for name in variants}
    return {"model": model, "images": len(jobs), "steps": steps, "guidance": guidance, "size": base.height,
            "threads": threads, "reps": reps, "images_per_s": rates, "ratio_vs_original": ratios,
            "best_batch_size": best_batch, "best_batch_ratio": plain[best_batch], "best_variant": best,
            "best_ratio": ratios[best], "compile_s": compile_s, "max_pixel_diff_vs_original": diffs,
            "verdicts_changed_vs_original": changed,
            "accuracy": {n: (None if v is None else float(np.mean([x is True for x in v]))) for n, v in judged.items()}}


# ------------------------------------------------------------------ (b) judging
def _judge_jobs(n: int) -> list[tuple[bytes, str]]:
    """n (PNG, question) pairs of mini-world count renders."""
    from .judge.client import png_bytes
    from .miniworld.render import render_count

    kinds = ("star", "box", "ball")
    return [(png_bytes(render_count(kinds[i % 3], 2 + i % 4, "on the sand", seed=i).image),
             f"How many {kinds[i % 3]}s are in this image? Answer with a single number.") for i in range(n)]


def bench_judging(n_images: int = 64, latency: float = 0.2, reps: int = 3, concurrency: int | None = None) -> dict:
    """Images/s of sequential blocking openai calls and of the async client at `concurrency` (None: the
    default for a remote judge) through a loopback server adding `latency` s to each answer. The server
    runs in its own process, as the kit starts its local judge (in this process it would share the
    client's interpreter lock and slow both)."""
    import openai

    from .config import JudgeConfig
    from .judge.client import JudgeClient, default_concurrency
    from .judge.registry import start_local_server

    model = "miniworld-exact"
    conc = concurrency or default_concurrency(local=False)
    work = _judge_jobs(n_images)

    def message(png: bytes, question: str) -> list[dict]:
        url = "data:image/png;base64," + base64.b64encode(png).decode()
        return [{"role": "user", "content": [{"type": "text", "text": question},
                                             {"type": "image_url", "image_url": {"url": url}}]}]

    def sequential() -> float:
        client = openai.OpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
        t = time.perf_counter()
        for png, q in work:
            client.chat.completions.create(model=model, messages=message(png, q), temperature=0)
        rate = len(work) / (time.perf_counter() - t)
        client.close()
        return rate

    def concurrent() -> float:
        async def go() -> float:
            async with JudgeClient(base_url, model, "not-needed", JudgeConfig(base_url=base_url,
                                                                             concurrency=conc)) as jc:
                await jc.check()
                t = time.perf_counter()
                await asyncio.gather(*(jc.ask(png, q) for png, q in work))
                return len(work) / (time.perf_counter() - t)

        return asyncio.run(go())

    with start_local_server(args=["--latency", str(latency)]) as base_url:
        rates = interleaved({"sequential_openai": sequential, f"async_client_concurrency_{conc}": concurrent}, reps)
    ratio = rates[f"async_client_concurrency_{conc}"]["median"] / rates["sequential_openai"]["median"]
    return {"images": n_images, "latency_s": latency, "concurrency": conc, "reps": reps, "images_per_s": rates,
            "ratio_vs_sequential": ratio}


# ------------------------------------------------------------------ (d) fine-tuning
def _tiny_dataset(folder: Path, n: int) -> Path:
    """An imagefolder of n mini-world count renders with their captions."""
    from .miniworld.render import render_count

    (folder / "train").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        count = 2 + i % 4
        render_count("star", count, "on the sand", seed=i).image.save(folder / "train" / f"{i:05d}.png")
        rows.append({"file_name": f"{i:05d}.png", "text": f"{count} stars, on the sand"})
    (folder / "train" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def bench_finetune(model: str = "miniworld", steps: tuple[int, int] = (5, 25), batch: int = 16, reps: int = 3,
                   images: int = 64, threads: int = 1) -> dict:
    """s/step and images/s of `finetune.train`: the time of steps[1] - steps[0] extra steps (no setup)."""

    from .config import FinetuneConfig
    from .finetune import train

    set_torch_threads(threads)
    tmp = Path(tempfile.mkdtemp(prefix="compseed-bench-ft-"))
    data = _tiny_dataset(tmp / "data", images)

    def timed(n: int) -> float:
        work = Path(tempfile.mkdtemp(dir=tmp))
        cfg = FinetuneConfig(steps=n, batch=batch, warmup=1, checkpoint_every=10_000)
        t = time.perf_counter()
        train(model, data, cfg, work / "work", work / "out", device="cpu", progress=False)
        return time.perf_counter() - t

    timed(steps[0])  # warm the latent cache path once (each repetition encodes again in its own folder)
    per_step = interleaved({"s_per_step": lambda: (timed(steps[1]) - timed(steps[0])) / (steps[1] - steps[0])},
                           reps)["s_per_step"]
    return {"model": model, "batch": batch, "steps": list(steps), "threads": threads, "reps": reps,
            "s_per_step": per_step, "images_per_s": batch / per_step["median"]}


# ------------------------------------------------------------------ (c) chain and scaling
def read_chain(report: str | Path = REPO / "reports" / "mini") -> dict | None:
    """Seconds per notebook of the default chain from a report's timings.txt (None when absent)."""
    f = Path(report) / "timings.txt"
    if not f.is_file():
        return None
    steps = {k: float(v.split()[0]) for k, v in (line.split("\t") for line in f.read_text().splitlines() if line)}
    return {"source": str(f.relative_to(REPO)) if f.is_relative_to(REPO) else str(f),
            "recorded": datetime.fromtimestamp(f.stat().st_mtime, UTC).isoformat(timespec="seconds"),
            "seconds": steps, "total_s": sum(steps.values())}


def launch_scaling(n_images: int, processes: int, steps: int, batch: int, model: str = "miniworld") -> float:
    """Seconds `generate_distributed` takes for n images under `accelerate launch --cpu` (load excluded)."""
    with tempfile.TemporaryDirectory(prefix="compseed-bench-scale-") as tmp:
        out = Path(tmp) / "t.json"
        threads = max(1, (os.cpu_count() or 2) // 2 // processes)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        res = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes",
                              str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend",
                              "no", str(REPO / "bench" / "scale_generate.py"), "--run", str(Path(tmp) / "run"),
                              "--images", str(n_images), "--steps", str(steps), "--batch", str(batch), "--model",
                              model, "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"accelerate launch of bench/scale_generate.py failed:\n{res.stderr[-3000:]}")
        return json.loads(out.read_text())["seconds"]


def bench_scaling(sizes=(32, 128, 256, 512, 1024), processes=(1, 2, 4), steps: int = 10, batch: int = 32,
                  reps: int = 3, model: str = "miniworld") -> dict:
    """s/image per (images, processes), interleaved; deviation from linear between the sizes >= 128."""
    variants = {f"{n}x{p}": (lambda n=n, p=p: launch_scaling(n, p, steps, batch, model) / n)
                for p in processes for n in sizes}
    s_per_image = interleaved(variants, reps)
    linear = {}
    for p in processes:
        big = [n for n in sizes if n >= 128] or list(sizes)
        ref = s_per_image[f"{big[-1]}x{p}"]["median"]
        linear[p] = max(abs(s_per_image[f"{n}x{p}"]["median"] / ref - 1) for n in big)
    speedup = {p: s_per_image[f"{sizes[-1]}x1"]["median"] / s_per_image[f"{sizes[-1]}x{p}"]["median"]
               for p in processes} if 1 in processes else {}
    return {"model": model, "steps": steps, "batch": batch, "reps": reps, "sizes": list(sizes),
            "processes": list(processes), "s_per_image": s_per_image,
            "max_deviation_from_linear": linear, "speedup_vs_1_process": speedup}


def line_fit(scaling: dict, processes: int) -> tuple[float, float, float]:
    """(fixed s, s per image, largest |residual| / time) of a least-squares line through the median total
    seconds of each size at `processes` processes: the fixed cost of a launch and the marginal cost."""
    n = np.array(scaling["sizes"], dtype=float)
    t = np.array([scaling["s_per_image"][f"{int(k)}x{processes}"]["median"] * k for k in n])
    b, a = np.polyfit(n, t, 1)
    return float(a), float(b), float(np.max(np.abs(t - (a + b * n)) / t))


# ------------------------------------------------------------------ report
def write_report(results: dict, out_dir: str | Path) -> Path:
    """bench.json and README.md (the tables) in `out_dir`; returns the README's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gpu = out / "gpu_sd21.json"
    if gpu.is_file() and "gpu_sd21" not in results:
        results["gpu_sd21"] = json.loads(gpu.read_text())
    (out / "bench.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    m = results["machine"]
    fmt = lambda s: f"{s['median']:.3g} ({s['min']:.3g}–{s['max']:.3g})"  # noqa: E731
    lines = ["# Benchmarks (`compseed bench`)", "",
             f"{m['date']} · {m['processor']}, {m['cpus']} CPUs ({m['platform']}) · load at start "
             f"{m['load_1min_at_start']} · torch threads {m['torch_threads']} · GPU {m['cuda']} · "
             + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), "",
             "Each figure: median (min–max) of interleaved repetitions; ratios are of medians. Under each "
             "heading: when it was measured and the machine's load then (sections are re-measured alone with "
             "`--only`).", ""]

    def when(d: dict) -> list[str]:
        m = d.get("measured") or {}
        load = m.get("load_1min_at_start")
        return [f"_measured {m.get('date')}" + (f", 1-min load at start {load:.2f}" if load is not None else "")
                + "_", ""] if m else []

    for g in [v for k, v in results.items() if k.startswith("generation")]:
        lines += [f"## (a) Generation: {g['images']} images, {g['model']}, {g['steps']} steps, {g['threads']} "
                  f"thread(s), {g['reps']} reps", "", *when(g),
                  "| variant | images/s | × original | max pixel diff | verdicts changed | accuracy |",
                  "|---|---|---|---|---|---|"]
        for name, rate in g["images_per_s"].items():
            changed, acc = g["verdicts_changed_vs_original"][name], g["accuracy"][name]
            lines.append(f"| {name.replace('_', ' ')} | {fmt(rate)} | {g['ratio_vs_original'][name]:.2f} | "
                         f"{g['max_pixel_diff_vs_original'][name]}/255 | {'' if changed is None else changed} | "
                         f"{'' if acc is None else f'{acc:.3f}'} |")
        lines += ["", f"Plain batching, best batch size {g['best_batch_size']}: {g['best_batch_ratio']:.2f}× the "
                      f"original loop; best variant {g['best_variant'].replace('_', ' ')}: {g['best_ratio']:.2f}×."]
        if g["compile_s"]:
            lines += ["Compile time (outside the timing, once per process): " + ", ".join(
                f"{k.replace('_', ' ')} {v:.0f} s" for k, v in g["compile_s"].items()) + "."]
        lines += [""]
    if j := results.get("judging"):
        lines += [f"## (b) Judging: {j['images']} images, server latency {j['latency_s']} s, {j['reps']} reps", "",
                  *when(j),
                  "| variant | images/s |", "|---|---|"]
        lines += [f"| {k} | {fmt(v)} |" for k, v in j["images_per_s"].items()]
        lines += ["", f"Async client at concurrency {j['concurrency']}: {j['ratio_vs_sequential']:.2f}× "
                      f"sequential calls.", ""]
    if j := results.get("judging_local"):
        lines += [f"## (b) The kit's own judge on loopback (no added latency, {j['images']} images)", "", *when(j),
                  "| variant | images/s |", "|---|---|"] + [f"| {k} | {fmt(v)} |" for k, v in j["images_per_s"].items()]
        lines += ["", f"Concurrency {j['concurrency']} (the local default): {j['ratio_vs_sequential']:.2f}× "
                      f"sequential calls.", ""]
    if c := results.get("chain"):
        lines += [f"## (c) Default chain ({c['source']}, recorded {c['recorded']})", "", "| notebook | s |",
                  "|---|---|"] + [f"| {k} | {v:g} |" for k, v in c["seconds"].items()]
        lines += [f"| total | {c['total_s']:.0f} |", ""]
    if s := results.get("scaling"):
        lines += [f"## (c) Scaling under accelerate launch ({s['model']}, {s['steps']} steps, batch {s['batch']}, "
                  f"{s['reps']} reps): s/image", "", *when(s),
                  "| images | " + " | ".join(f"{p} proc" for p in s["processes"]) + " |",
                  "|---|" + "---|" * len(s["processes"])]
        lines += [f"| {n} | " + " | ".join(fmt(s["s_per_image"][f"{n}x{p}"]) for p in s["processes"]) + " |"
                  for n in s["sizes"]]
        lines += ["", "Largest deviation from linear (s/image at sizes ≥ 128 against the largest size): " + ", ".join(
            f"{p} proc {100 * d:.1f}%" for p, d in s["max_deviation_from_linear"].items()) + "; speed-up at "
            + ", ".join(f"{p} proc {v:.2f}×" for p, v in s["speedup_vs_1_process"].items()) + ".",
            "Least-squares line of total seconds (median) against images: " + "; ".join(
                f"{p} proc {a:+.1f} s + {1000 * b:.1f} ms/image (largest residual {100 * r:.0f}% of the time)"
                for p, (a, b, r) in ((p, line_fit(s, p)) for p in s["processes"])) + ".", ""]
    if f := results.get("finetune"):
        lines += [f"## (d) Fine-tuning ({f['model']}, batch {f['batch']}, {f['threads']} thread(s), {f['reps']} reps)",
                  "", *when(f), f"{fmt(f['s_per_step'])} s/step, {f['images_per_s']:.1f} images/s.", ""]
    if x := results.get("gpu_sd21"):
        lines += [f"## (e) SD 2.1 shape ({x['device']}, {x['shape']} shape, {x['size']} px, {x['steps']} steps, "
                  f"CFG)", "", "| dtype | batch | compile | s/image | MFU |", "|---|---|---|---|---|"]
        lines += [f"| {r['dtype']} | {r['batch']} | {r['compile']} | {fmt(r['s_per_image'])} | {_pct(r['mfu'])} |"
                  for r in x["rows"]]
        lines += ["", f"{x['tflop_per_image']:.3g} TFLOP per image (FlopCounterMode); peak "
                      f"{x['peak_tflops']} TFLOP/s.", ""]
    readme = out / "README.md"
    readme.write_text("\n".join(lines))
    return readme


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def default_model() -> str:
    """The default chain's generator (configs/mini.yaml), which the benchmarks time unless told otherwise."""
    from .config import load_config

    return load_config(REPO / "configs" / "mini.yaml").model.pipeline


def generation_key(model: str, threads: int) -> str:
    """The results key of a generation table: one per model and thread count."""
    return f"generation_{model}_{threads}_threads"


def _previous(out: Path, quick: bool) -> dict:
    """The sections of `out`/bench.json measured before (full-size ones only for a full run), each with
    the date and load it was measured at."""
    f = out / "bench.json"
    try:
        old = json.loads(f.read_text()) if f.is_file() else {}
    except ValueError:
        log.warning("%s is not JSON; starting a new report", f)
        return {}
    if bool(old.get("quick")) != quick:
        return {}
    stamp = _stamp(old.get("machine", {}))
    return {k: {"measured": stamp, **v} for k, v in old.items()
            if isinstance(v, dict) and k not in ("machine", "gpu_sd21")}


def _stamp(m: dict) -> dict:
    return {k: m.get(k) for k in ("date", "load_1min_at_start", "torch_threads")}


def run_all(out_dir: str | Path = REPO / "reports" / "bench", quick: bool = False,
            only: list[str] | None = None, model: str | None = None,
            sizes: tuple[int, ...] = (32, 128, 256, 512, 1024), processes: tuple[int, ...] | None = None,
            threads: tuple[int, ...] = (1,)) -> Path:
    """Every benchmark (or `only` these), full size or `quick`; writes the report and returns its README.
    Sections of an earlier report in `out_dir` that this call does not measure are kept, each with the
    date and load it was measured at (`--only judging` re-measures judging and keeps the rest)."""
    todo = only or ["generation", "judging", "chain", "scaling", "finetune"]
    unknown = sorted(set(todo) - {"generation", "judging", "chain", "scaling", "finetune"})
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}: use generation, judging, chain, scaling, finetune")
    model = model or default_model()
    m = machine()
    new: dict = {}
    if "generation" in todo:
        for n in threads:
            new[generation_key(model, n)] = bench_generation(
                model, n_images=4, batch_sizes=(2, 4), steps=2, threads=n, tuned=("bfloat16",)) if quick else \
                bench_generation(model, threads=n)
    if "judging" in todo:
        new["judging"] = bench_judging(n_images=8, latency=0.05) if quick else bench_judging()
        from .judge.client import LOCAL_CONCURRENCY

        new["judging_local"] = bench_judging(n_images=8 if quick else 256, latency=0.0, concurrency=LOCAL_CONCURRENCY)
    if "chain" in todo and (chain := read_chain()) is not None:
        new["chain"] = chain
    if "scaling" in todo:
        new["scaling"] = bench_scaling(sizes=(4, 8), processes=(1, 2), steps=2, batch=4, reps=1, model=model) \
            if quick else bench_scaling(sizes=sizes, model=model, processes=processes or tuple(
                p for p in (1, 2, 4, 8, 16) if p <= (os.cpu_count() or 1)))
    if "finetune" in todo:
        new["finetune"] = bench_finetune(steps=(1, 8), batch=4, images=8) if quick else bench_finetune()
    results = {"machine": m, "quick": quick, **_previous(Path(out_dir), quick)}
    results.update({k: {"measured": _stamp(m), **v} for k, v in new.items()})
    return write_report(results, out_dir)
