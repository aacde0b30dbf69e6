"""One comparison of every method on the same held-out prompts and evaluation seeds (notebook 09).

Arms (config `methods.arms`; images in the run like the paper's arms, resumable, judged by the judge stage):
  base, top_seeds, qk, ...  the paper's arms (evaluate.py, stages `eval_<arm>`, shared with notebook 07)
  regional          RPG regional prompting: a plan per prompt from the planner (`methods.planner`, the kit's
                    rule-based mini-world planner by default), plans kept in tables/regional_plans.csv
  guided            InfSplign-style attention-loss guidance (`methods.guidance_*`; counting prompts unguided)
  best_of_n         per (prompt, evaluation seed) slot s: N candidate seeds s, s + stride, ... s + (N-1) stride,
                    the run's judge (selection) picks one, whose image is stored under slot s; the scoring is
                    the evaluation judge's, as for every arm (the same judge when the run has one: then the
                    number flatters the search). Compute: N images and N selection requests per stored image.
  top_seeds_guided  the mined top seeds of each category with the guidance
Method stages are `method_<arm>`; every arm but the top-seed arms has exactly the (prompt, seed) pairs of
base, so it is paired with base (McNemar, bootstrap over prompts); the top-seed arms are paired by prompt.
The stage's sampler column records the method and its settings, so a rerun with other settings is refused.

Wall time per image: measured while an arm generates (selection judging included for best-of-N), written to
tables/method_timing.csv; an arm whose images another notebook made is timed on a probe of
`methods.timing_probe` images rendered again in memory.

Outputs: `Comparison` (judged rows and benchmark answers per arm, timing, plans, best-of-N choices),
`comparison_table` (long: arm, metric, value, lo, hi, n) and `wide_table` (every arm x every metric).

Usage:
    res = compare.run_comparison(run, heldout, top, cfg)
    table = compare.comparison_table(res, n_bootstrap=2000); compare.wide_table(table)
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import benchmarks, evaluate
from .config import ARMS, JudgeConfig, MethodsConfig
from .generate import Job, check_stage_settings, pending_jobs, render, stage_settings, write_batch
from .progress import bar as progress_bar
from .prompts import Prompt
from .runtime import torch_threads
from .stats import wilson_interval
from .store import Run

log = logging.getLogger(__name__)
TOP_SEED_ARMS = ("top_seeds", "top_seeds_guided")  # on each category's mined seeds, not the evaluation seeds
TIMING = "method_timing"
METRICS = ["judge/all", "judge/count", "judge/spatial", "judge/all - base", "geneval/counting", "geneval/position",
           "geneval/overall", "t2i-compbench/spatial", "visor/OA", "visor/uncond", "visor/cond", "visor/VISOR_1",
           "visor/VISOR_2", "visor/VISOR_3", "visor/VISOR_4", "s/image", "images/image"]


def stage_of(arm: str) -> str:
    """The image stage of an arm: `eval_<arm>` for the paper's arms, `method_<arm>` for the others."""
    return f"eval_{arm}" if arm in ARMS else f"method_{arm}"


def arm_jobs(arm: str, prompts: Sequence[Prompt], seeds: Sequence[int], top: pd.DataFrame | None) -> list[Job]:
    """(prompt, seed) pairs of an arm: the evaluation seeds, or each category's mined top seeds."""
    return evaluate.arm_jobs("top_seeds" if arm in TOP_SEED_ARMS else "base", prompts, seeds, top)


def candidates(slot: int, m: MethodsConfig) -> list[int]:
    """Best-of-N candidate seeds of evaluation seed `slot`: the slot's own seed first."""
    return [slot + k * m.seed_stride for k in range(m.best_of_n)]


@contextmanager
def served(cfgs: Sequence[JudgeConfig]):
    """Each judge config with a running endpoint: the kit's local servers started once for the whole
    comparison (instead of once per request batch); remote judges unchanged."""
    from .judge.client import default_concurrency
    from .judge.registry import open_endpoint, resolve

    with ExitStack() as stack:
        started: dict = {}  # by repr: one server per distinct local judge
        for cfg in cfgs:
            if resolve(cfg).base_url is None and repr(cfg) not in started:
                url, model, _ = stack.enter_context(open_endpoint(cfg))
                started[repr(cfg)] = dataclasses.replace(  # still the kit's own server: few requests in flight
                    cfg, base_url=url, model=model, concurrency=cfg.concurrency or default_concurrency(local=True))
        yield [started.get(repr(cfg), cfg) for cfg in cfgs]


# ---------------------------------------------------------------------------- storing an arm's images
def store_images(run: Run, stage: str, jobs: Sequence[Job], draw: Callable[[list[Job]], list], settings: dict,
                 chunk: int, progress: bool = True) -> tuple[int, float]:
    """Draw and store every job not already in the stage (as `generate.generate` does: PNG, then ledger row,
    hash-checked resume); (images made, seconds spent)."""
    existing = run.ledger.images(stage)
    check_stage_settings(run, stage, existing, settings)
    todo = pending_jobs(run, stage, list(jobs), existing)
    started = time.perf_counter()
    with progress_bar(total=len(todo), desc=f"generate {stage}", unit="img", disable=not progress or not todo) as bar:
        for i in range(0, len(todo), chunk):
            batch = todo[i:i + chunk]
            write_batch(run, stage, batch, draw(batch), settings, run.ledger)
            bar.update(len(batch))
    return len(todo), time.perf_counter() - started


def _by(jobs: list[Job], key) -> dict:
    groups: dict = {}
    for j in jobs:
        groups.setdefault(key(j), []).append(j)
    return groups


def _regional_draw(pipe, info, plans: dict, cfg):
    from .methods.regional import generate_regional

    g = cfg.generate

    def draw(jobs: list[Job]) -> list:
        out = {}
        for pid, js in _by(jobs, lambda j: j.prompt.id).items():
            images = generate_regional(pipe, [js[0].prompt], [plans[pid]], [j.seed for j in js], g.steps, g.guidance,
                                       g.height, g.width, g.batch_size, info["generator_device"])
            out.update(zip(js, images, strict=True))
        return [out[j] for j in jobs]
    return draw


def _guided_draw(pipe, info, cfg):
    from .methods.guidance import GuidanceConfig, generate_guided

    g, m = cfg.generate, cfg.methods
    gcfg = GuidanceConfig(scale=m.guidance_scale, start=m.guidance_start, end=m.guidance_end)
    return lambda jobs: generate_guided(pipe, [j.prompt for j in jobs], [j.seed for j in jobs], gcfg, g.steps,
                                        g.guidance, g.height, g.width, info["generator_device"], g.batch_size)


def _search_draw(pipe, info, select: JudgeConfig, cfg, choices: list):
    from .methods.search import best_of_n

    g = cfg.generate

    def draw(jobs: list[Job]) -> list:
        out = {}
        for slot, js in _by(jobs, lambda j: j.seed).items():
            res = best_of_n(pipe, info, [j.prompt for j in js], candidates(slot, cfg.methods), judge=select,
                            steps=g.steps, guidance=g.guidance, height=g.height, width=g.width, batch_size=g.batch_size)
            choices.append(res.chosen.assign(slot_seed=slot))
            chosen = dict(zip(res.chosen["prompt_id"], res.chosen["seed"], strict=True))
            out.update({j: res.images[(j.prompt.id, int(chosen[j.prompt.id]))] for j in js})
        return [out[j] for j in jobs]
    return draw


def method_sampler(arm: str, info: dict, m: MethodsConfig) -> str:
    """The ledger's sampler value of a method stage: the scheduler plus the method and its settings."""
    what = {"regional": f"regional(base_ratio={m.base_ratio}, planner={m.planner})",
            "guided": f"infsplign(scale={m.guidance_scale:g}, window={m.guidance_start}-{m.guidance_end})",
            "top_seeds_guided": f"infsplign(scale={m.guidance_scale:g}, window={m.guidance_start}-{m.guidance_end})",
            "best_of_n": f"best_of_n(n={m.best_of_n}, stride={m.seed_stride})"}[arm]
    return f"{info['sampler']}+{what}"


# ---------------------------------------------------------------------------- the comparison
@dataclass
class Comparison:
    """Judged rows and benchmark answers of every arm, wall time per image, regional plans, best-of-N picks."""

    judged: dict[str, pd.DataFrame]
    answers: dict[str, pd.DataFrame]
    timing: pd.DataFrame
    plans: pd.DataFrame = field(default_factory=pd.DataFrame)
    choices: pd.DataFrame = field(default_factory=pd.DataFrame)
    selection_is_scoring: bool = True  # best-of-N: the judge that picked is the judge that scores


def regional_plans(run: Run, prompts: Sequence[Prompt], cfg, planner: JudgeConfig) -> tuple[dict, pd.DataFrame]:
    """{prompt_id: Plan} from the planner, kept in tables/regional_plans.csv so a resumed arm keeps its plans."""
    from .methods.planner import plan_all
    from .methods.regional import Plan

    try:
        table = run.load_table("regional_plans")
    except FileNotFoundError:
        table = pd.DataFrame(columns=["prompt_id"])
    have = set(table["prompt_id"])
    todo = [p for p in prompts if p.id not in have]
    if todo:
        new = pd.DataFrame([dict(prompt_id=p.id, prompt=p.text, split_ratio=r.plan.split_ratio,
                                 base_ratio=r.plan.base_ratio, regional_prompts=r.plan.text, fallback=r.fallback,
                                 reason=r.reason) for p, r in zip(todo, plan_all(todo, planner), strict=True)])
        table = new if table.empty else pd.concat([table, new], ignore_index=True)
        run.save_table(table, "regional_plans")
    plans = {}
    for r in table.itertuples():
        ratio = float(r.base_ratio) if cfg.methods.base_ratio is None else cfg.methods.base_ratio
        plans[r.prompt_id] = Plan.from_text(str(r.split_ratio), r.regional_prompts, ratio)
    return plans, table[table["prompt_id"].isin({p.id for p in prompts})]


def _timing_table(run: Run) -> pd.DataFrame:
    try:
        return run.load_table(TIMING)
    except FileNotFoundError:
        return pd.DataFrame(columns=["arm", "images_timed", "seconds_per_image", "images_per_image",
                                     "judge_requests_per_image", "timed"])


def _record_timing(run: Run, arm: str, n: int, seconds: float, how: str, m: MethodsConfig) -> None:
    table = _timing_table(run)
    per = m.best_of_n if arm == "best_of_n" else 1
    row = dict(arm=arm, images_timed=n, seconds_per_image=seconds / n, images_per_image=per,
               judge_requests_per_image=per if arm == "best_of_n" else 0, timed=how)
    table = pd.concat([table[table["arm"] != arm], pd.DataFrame([row])], ignore_index=True)
    run.save_table(table, TIMING)


def bench_answers(run: Run, stage: str, prompts: Sequence[Prompt], judge: JudgeConfig) -> pd.DataFrame:
    """The benchmark answers table of a stage (detections by `judge`), kept in tables/ and reused while
    every image's hash is unchanged."""
    rows = run.ledger.images(stage)
    rows = rows[rows["prompt_id"].isin({p.id for p in prompts})]
    name = f"bench_answers_{stage}"
    try:
        cached = run.load_table(name)
        if set(zip(cached["prompt_id"], cached["seed"], cached["sha256"])) == \
                set(zip(rows["prompt_id"], rows["seed"].astype(int), rows["sha256"])):
            return benchmarks.from_raw(cached)
    except FileNotFoundError:
        pass
    answers = benchmarks.stage_answers(run, stage, list(prompts), judge)
    answers = answers.merge(rows[["prompt_id", "seed", "sha256"]], on=["prompt_id", "seed"])
    run.save_table(answers.drop(columns=["detections", "bad_answer"]).assign(
        metadata=[json.dumps(md) for md in answers["metadata"]]), name)
    return answers


def run_comparison(run: Run, prompts: Sequence[Prompt], top: pd.DataFrame | None, cfg,
                   progress: bool = True) -> Comparison:
    """Generate (resumably), judge and benchmark every arm of `cfg.methods.arms` on the held-out prompts."""
    from .judge import judge_stage
    from .judge.registry import resolve
    from .pipelines import load_pipeline

    m = cfg.methods
    if m is None:
        raise ValueError("the run's config has no methods section (add `methods: {}` for the defaults)")
    prompts = list(prompts)
    score = evaluate.eval_judge(cfg)
    judged, answers, choices = {}, {}, []
    plans = pd.DataFrame()
    wanted = [cfg.judge, score] + ([JudgeConfig(name=m.planner)] if "regional" in m.arms else [])
    with served(wanted) as (select, score_s, *planner):
        pipe = info = None
        for arm in m.arms:
            stage, jobs = stage_of(arm), arm_jobs(arm, prompts, cfg.evaluate.seeds, top)
            timed = set(_timing_table(run)["arm"])
            if arm in ARMS:  # the paper's arms: made (or resumed) exactly as notebook 07 makes them
                judged[arm] = evaluate.run_arm(run, arm, prompts, top, cfg, progress=progress)
                if arm not in timed:
                    arm_pipe, arm_info = load_pipeline(dataclasses.replace(
                        cfg.model, pipeline=evaluate.arm_model(run, arm, cfg.model.pipeline)))
                    _probe(run, arm, jobs, lambda js, p=arm_pipe, i=arm_info: _render(p, i, js, cfg.generate), cfg)
                answers[arm] = bench_answers(run, stage, prompts, score_s)
                continue
            if pipe is None:
                pipe, info = load_pipeline(cfg.model)
            if arm == "regional":
                by_id, plans = regional_plans(run, prompts, cfg, planner[0])
                draw = _regional_draw(pipe, info, by_id, cfg)
            elif arm == "best_of_n":
                draw = _search_draw(pipe, info, select, cfg, choices)
                jobs = sorted(jobs, key=lambda j: j.seed)  # one slot (evaluation seed) per chunk
            else:
                draw = _guided_draw(pipe, info, cfg)
            settings = {**stage_settings(info, cfg.generate), "sampler": method_sampler(arm, info, m)}
            chunk = len(prompts) if arm == "best_of_n" else cfg.generate.batch_size
            with torch_threads(cfg.generate.threads, info["device"]):
                n, seconds = store_images(run, stage, jobs, draw, settings, chunk, progress)
                if n:
                    _record_timing(run, arm, n, seconds, "while generating", m)
                elif arm not in timed:  # (best-of-N's probe picks are not kept)
                    _probe(run, arm, jobs, _search_draw(pipe, info, select, cfg, []) if arm == "best_of_n" else draw,
                           cfg)
            judged[arm] = judge_stage(run, stage, prompts, score_s, progress=progress).assign(arm=arm)
            answers[arm] = bench_answers(run, stage, prompts, score_s)
        same = resolve(select).model == resolve(score_s).model
    if choices:
        new = pd.concat(choices, ignore_index=True)
        try:
            new = pd.concat([run.load_table("best_of_n_choices"), new], ignore_index=True)
        except FileNotFoundError:
            pass
        run.save_table(new.drop_duplicates(["prompt_id", "slot_seed"], keep="last"), "best_of_n_choices")
    try:
        picks = run.load_table("best_of_n_choices")
    except FileNotFoundError:
        picks = pd.DataFrame()
    return Comparison(judged, answers, _timing_table(run), plans, picks, same)


def _render(pipe, info, jobs: list[Job], g) -> list:
    return render(pipe, info, [j.prompt.text for j in jobs], [j.seed for j in jobs], g.steps, g.guidance, g.height,
                  g.width)


def _probe(run: Run, arm: str, jobs: list[Job], draw, cfg) -> None:
    """Time an arm on its first `methods.timing_probe` jobs, drawn again in memory (nothing stored)."""
    sample = list(jobs)[:cfg.methods.timing_probe]
    started = time.perf_counter()
    from .pipelines import resolve_device

    with torch_threads(cfg.generate.threads, str(resolve_device(cfg.model.device))):
        for i in range(0, len(sample), cfg.generate.batch_size):
            draw(sample[i:i + cfg.generate.batch_size])
    _record_timing(run, arm, len(sample), time.perf_counter() - started, f"probe of {len(sample)} images", cfg.methods)


# ---------------------------------------------------------------------------- tables
def comparison_table(res: Comparison, n_bootstrap: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Long table: arm, metric, value, lo, hi, n — the judge's accuracy (all / count / spatial, Wilson 95%),
    the difference to base (paired bootstrap 95%, McNemar p), every benchmark metric (bootstrap over prompts)
    and wall time / images generated per stored image."""
    pairs = evaluate.arm_table(res.judged, n_bootstrap, seed, prompt_paired=TOP_SEED_ARMS)
    pairs = pairs[pairs["level"] == "all"].set_index("arm")
    timing = res.timing.set_index("arm")
    rows = []
    for arm, df in res.judged.items():
        for level in ("all", "count", "spatial"):
            sub = df if level == "all" else df[df["kind"] == level]
            known = sub["correct"].dropna().astype(bool)
            if len(sub):
                lo, hi = wilson_interval(int(known.sum()), len(known))
                rows.append(dict(arm=arm, metric=f"judge/{level}", value=known.mean() if len(known) else np.nan,
                                 lo=lo, hi=hi, n=len(known)))
        if arm != "base":
            p = pairs.loc[arm]
            rows.append(dict(arm=arm, metric="judge/all - base", value=p["gain_vs_base"], lo=p["diff_lo"],
                             hi=p["diff_hi"], n=p.get("pairs", np.nan), p=p.get("mcnemar_p", np.nan)))
        for r in benchmarks.score_all(res.answers[arm], n_bootstrap, seed).itertuples():
            rows.append(dict(arm=arm, metric=r.metric, value=r.value, lo=r.lo, hi=r.hi, n=r.n_images))
        if arm in timing.index:
            t = timing.loc[arm]
            rows.append(dict(arm=arm, metric="s/image", value=float(t["seconds_per_image"]), n=t["images_timed"],
                             note=t["timed"]))
            rows.append(dict(arm=arm, metric="images/image", value=float(t["images_per_image"])))
    return pd.DataFrame(rows)


def wide_table(table: pd.DataFrame) -> pd.DataFrame:
    """Every arm (rows) x every metric (columns): 'value [lo, hi]', seconds and images per stored image."""
    def cell(r) -> str:
        if r.metric in ("s/image", "images/image"):
            return f"{r.value:.3g}"
        if pd.isna(r.value):
            return "–"
        sign = "+" if r.metric.endswith("- base") and r.value > 0 else ""
        return f"{sign}{r.value:.2f} [{r.lo:.2f}, {r.hi:.2f}]"

    cells = table.assign(cell=[cell(r) for r in table.itertuples()])
    wide = cells.pivot(index="arm", columns="metric", values="cell")
    arms = list(dict.fromkeys(table["arm"]))
    cols = [c for c in METRICS if c in wide.columns] + [c for c in wide.columns if c not in METRICS]
    return wide.reindex(index=arms, columns=cols).fillna("–")


def grid_examples(prompts: Sequence[Prompt], seeds: Sequence[int], m: MethodsConfig) -> tuple[list[str], list[int]]:
    """Prompt ids (half counting, half spatial, spread over the list) and evaluation seeds for the grids."""
    kinds = [[p for p in prompts if p.kind == k] for k in ("count", "spatial")]
    per = [m.grid_prompts - m.grid_prompts // 2, m.grid_prompts // 2]
    chosen = [ps[int(i)].id for ps, n in zip(kinds, per, strict=True) if ps
              for i in np.linspace(0, len(ps) - 1, min(n, len(ps)))]
    return chosen, list(seeds)[:m.grid_seeds]
