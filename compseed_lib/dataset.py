"""Self-generated dataset: top seeds -> images -> judged -> rectified captions -> an imagefolder.

The paper's data step: generate every training prompt with the seeds mined for its
category, ask the judge about each image, and make each caption say what the image shows.

Rectification rebuilds a caption from the prompt's *structure* with the judged value — never by
string replacement (the original turned "tents" into "ten…"):
- counting: judged == asked -> kept; judged 1 -> the singular with its article ("a ball, on the sand");
  judged 2..10 -> the template with that count word and the object's own plural ("three fish, …");
  judged 0, unknown, or above the template's range -> dropped (with the reason counted);
- spatial: the asked relation held -> kept; the opposite relation held (asked as a second question)
  -> the sentence rebuilt with that relation; neither (an object missing, or another arrangement) or
  unknown -> dropped.

Inputs: a `Run` whose ledger holds the judged training images and `tables/top_seeds.csv` (notebook 03),
the training prompts, a `JudgeConfig`.
Outputs: `runs/<name>/dataset/` as a Hugging Face imagefolder — `train/<prompt_id>_s<seed>.png` and
`train/metadata.jsonl` with `file_name`, `text`, `prompt_id`, `seed`, `category`, `target`, `judged`,
`rectified`; `datasets.load_dataset("imagefolder", data_dir=...)` reads it back.

Usage:
    rows = rectify(prompt, judged_count)                   # Rectified(text, status, reason)
    jobs = dataset_jobs(prompts, top_seeds_table, per_prompt=1)
    tables = build_datasets(run, pipe, info, top, cfg)    # the dataset and its controls, exported
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .generate import Job, make_jobs
from .prompts import COUNT_WORDS, OPPOSITE, RELATION_TEXT, Prompt, numerical_text
from .store import Run, atomic_write_text

log = logging.getLogger(__name__)
STAGE = "dataset"
KEPT, RECTIFIED, DROPPED = "kept", "rectified", "dropped"


@dataclass(frozen=True)
class Rectified:
    """A caption decision: the caption to train on (None when dropped), what happened, and why."""

    text: str | None
    status: str  # kept | rectified | dropped
    reason: str  # e.g. "count 3 -> 4", "judged 0", "unknown answer", "above the template's range"


def count_caption(prompt: Prompt, n: int) -> str:
    """The counting caption of `prompt` rebuilt for `n` objects: 1 -> singular with its article."""
    if n == 1:
        return f"{prompt.obj.singular}, {prompt.background}"
    return numerical_text(prompt.obj, n, prompt.background)


def spatial_caption(prompt: Prompt, relation: str) -> str:
    """The spatial sentence of `prompt` rebuilt with `relation` (articles from the object files)."""
    return f"{prompt.obj.singular} {RELATION_TEXT[relation]} {prompt.obj_b.singular}"


def rectify(prompt: Prompt, judged) -> Rectified:
    """The caption an image of `prompt` should have, given the judged value.

    `judged`: for counting, the judged count (int) or None; for spatial, the relation that holds
    ('left', 'right', 'above', 'below') or None when none of the asked ones does (or the answer was unknown).
    """
    if prompt.kind == "count":
        if judged is None:
            return Rectified(None, DROPPED, "unknown answer")
        n = int(judged)
        if n == prompt.count:
            return Rectified(prompt.text, KEPT, "as asked")
        if n <= 0:
            return Rectified(None, DROPPED, "judged 0")
        if n > max(COUNT_WORDS):
            return Rectified(None, DROPPED, "above the template's range")
        return Rectified(count_caption(prompt, n), RECTIFIED, f"count {prompt.count} -> {n}")
    if prompt.kind == "spatial":
        if judged is None:
            return Rectified(None, DROPPED, "relation not found (object missing or another arrangement)")
        if judged == prompt.relation:
            return Rectified(prompt.text, KEPT, "as asked")
        if judged not in RELATION_TEXT:
            raise ValueError(f"prompt {prompt.id}: judged relation {judged!r} is none of {list(RELATION_TEXT)}")
        return Rectified(spatial_caption(prompt, judged), RECTIFIED, f"{prompt.relation} -> {judged}")
    raise ValueError(f"prompt {prompt.id}: unknown kind {prompt.kind!r}")


def opposite_prompt(prompt: Prompt) -> Prompt:
    """The same objects under the opposite relation (the second question asked of a spatial image)."""
    from dataclasses import replace

    from .prompts import prompt_id

    rel = OPPOSITE[prompt.relation]
    text = spatial_caption(prompt, rel)
    return replace(prompt, id=prompt_id("spatial", text), text=text, relation=rel)


def dataset_jobs(prompts: Sequence[Prompt], top: pd.DataFrame, per_prompt: int | None = None,
                 choice: str = "best") -> list[Job]:
    """Every prompt under the top seeds mined for its category (`top_seeds` table: category, seed, rank);
    `per_prompt` caps the seeds per prompt (default: every top seed once): its category's best ones
    (`choice` 'best'), or as many drawn at random among them for each prompt ('random', as the paper picks
    one of a count's top-3 seeds per image; the draw is fixed by the prompt's id)."""
    missing = sorted({p.category for p in prompts} - set(top["category"].astype(str)))
    if missing:
        raise ValueError(f"no top seeds for categories {missing}: mine them first (notebook 03)")
    if per_prompt is not None and per_prompt < 1:
        raise ValueError(f"per_prompt must be >= 1, got {per_prompt!r}")
    if choice not in ("best", "random"):
        raise ValueError(f"seed choice must be 'best' or 'random', got {choice!r}")
    seeds = {c: g.sort_values("rank")["seed"].astype(int).tolist() for c, g in top.groupby("category")}
    if choice == "best" or per_prompt is None:
        return [j for p in prompts for j in make_jobs([p], seeds[p.category][:per_prompt])]
    import hashlib

    import numpy as np

    jobs = []
    for p in prompts:
        rng = np.random.default_rng(int(hashlib.sha1(p.id.encode()).hexdigest()[:12], 16))
        pool = seeds[p.category]
        pick = sorted(rng.choice(len(pool), size=min(per_prompt, len(pool)), replace=False).tolist())
        jobs.extend(make_jobs([p], [pool[i] for i in pick]))
    return jobs


def judged_values(judged: pd.DataFrame, opposite: pd.DataFrame | None, prompts: Sequence[Prompt]) -> dict:
    """{(prompt id, seed): judged value} from the judge stage's rows: counts for counting prompts; for
    spatial ones the asked relation if it held, else the opposite one if that held (second question), else None."""
    by_id = {p.id: p for p in prompts}
    opp = {}
    if opposite is not None and len(opposite):
        opp = {(r.prompt_id, int(r.seed)): r.parsed_answer for r in opposite.itertuples()}
    out = {}
    for r in judged.itertuples():
        p = by_id.get(r.prompt_id)
        if p is None:
            continue
        key = (p.id, int(r.seed))
        ans = r.parsed_answer if isinstance(r.parsed_answer, str) else None
        if p.kind == "count":
            out[key] = int(ans) if ans is not None else None
        elif ans == "yes":
            out[key] = p.relation
        elif ans == "no" and opp.get((opposite_prompt(p).id, int(r.seed))) == "yes":
            out[key] = OPPOSITE[p.relation]
        else:
            out[key] = None
    return out


def rectify_table(images: pd.DataFrame, values: dict, prompts: Sequence[Prompt]) -> pd.DataFrame:
    """One row per image: prompt, judged value, caption decision (text, status, reason)."""
    by_id = {p.id: p for p in prompts}
    rows = []
    for r in images.itertuples():
        p = by_id.get(r.prompt_id)
        if p is None:
            continue
        value = values.get((p.id, int(r.seed)))
        dec = rectify(p, value)
        rows.append(dict(prompt_id=p.id, seed=int(r.seed), prompt=p.text, kind=p.kind, category=p.category,
                         target=p.target, judged=None if value is None else str(value), text=dec.text,
                         status=dec.status, reason=dec.reason, path=r.path, sha256=r.sha256))
    return pd.DataFrame(rows)


def export_imagefolder(run: Run, table: pd.DataFrame, folder: str | Path | None = None) -> Path:
    """Write the kept and rectified images with metadata.jsonl as an imagefolder (split 'train');
    rebuilt whole into a temp folder and renamed into place, so a kill leaves the old one or the new one."""
    final = Path(folder) if folder else run.root / "dataset"
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "train").mkdir(parents=True)
    lines = []
    for r in table[table["status"] != DROPPED].itertuples():
        src = run.verified_image(r._asdict() | {"stage": getattr(r, "stage", STAGE)})
        name = f"{r.prompt_id}_s{int(r.seed):06d}.png"
        try:
            os.link(src, tmp / "train" / name)  # same bytes, no copy
        except OSError:
            shutil.copy2(src, tmp / "train" / name)
        judged = None if r.judged is None or pd.isna(r.judged) else str(r.judged)  # str or null, never NaN
        lines.append(json.dumps({"file_name": name, "text": r.text, "prompt_id": r.prompt_id, "seed": int(r.seed),
                                 "category": r.category, "target": str(r.target), "judged": judged,
                                 "rectified": r.status == RECTIFIED}))
    atomic_write_text(tmp / "train" / "metadata.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Kept / rectified / dropped per category, with the drop reasons."""
    counts = table.pivot_table(index="category", columns="status", values="seed", aggfunc="size", fill_value=0)
    for col in (KEPT, RECTIFIED, DROPPED):
        if col not in counts:
            counts[col] = 0
    counts = counts[[KEPT, RECTIFIED, DROPPED]]
    counts.loc["all"] = counts.sum()
    return counts.reset_index()


def _opposite_view(run: Run, images: pd.DataFrame, values_pending: list[tuple[Prompt, int]],
                   stage: str = STAGE) -> list[Prompt]:
    """Ledger rows of stage 'dataset_opposite' that point at the same files under the opposite-relation
    prompt, so the judge stage asks the second question of each spatial image judged 'no'."""
    by_key = {(r.prompt_id, int(r.seed)): r._asdict() for r in images.itertuples()}
    rows, opp_prompts = [], {}
    for p, seed in values_pending:
        q = opposite_prompt(p)
        opp_prompts[q.id] = q
        row = {k: v for k, v in by_key[(p.id, seed)].items() if k != "Index"}
        rows.append({**row, "stage": f"{stage}_opposite", "prompt_id": q.id, "prompt": q.text,
                     "category": q.category, "target": q.target})
    run.ledger.add_images(rows)
    return list(opp_prompts.values())


def build_dataset(run: Run, pipe, info: dict, prompts: Sequence[Prompt], jobs: Sequence[Job], cfg,
                  stage: str = STAGE, progress: bool = True) -> pd.DataFrame:
    """Generate `jobs`, judge and rectify one dataset (each step resumable); the caption table, which
    `export_imagefolder` writes out.

    `cfg` is the run's RunConfig (generate settings and judge).
    """
    from .generate import generate
    from .judge import judge_stage

    # 1. Images (engine: per-seed noise, ledger, resume)
    images = generate(run, stage, pipe, info, jobs, cfg.generate, progress=progress)
    images = images[images["prompt_id"].isin([p.id for p in prompts])]
    # 2. Judge; spatial images judged "no" are asked the opposite relation too
    judged = judge_stage(run, stage, list(prompts), cfg.judge, progress=progress)
    by_id = {p.id: p for p in prompts}
    pending = [(by_id[r.prompt_id], int(r.seed)) for r in judged.itertuples()
               if by_id[r.prompt_id].kind == "spatial" and r.parsed_answer == "no"]
    opposite = None
    if pending:
        opp_prompts = _opposite_view(run, images, pending, stage)
        opposite = judge_stage(run, f"{stage}_opposite", opp_prompts, cfg.judge, progress=progress)
    # 3. Rectify each caption from the prompt's structure and the judged value
    table = rectify_table(images, judged_values(judged, opposite, prompts), prompts)
    table["stage"] = stage
    counts = table["status"].value_counts()
    log.info("%s: %d images, %d kept, %d rectified, %d dropped", stage, len(table), counts.get(KEPT, 0),
             counts.get(RECTIFIED, 0), counts.get(DROPPED, 0))
    return table


def random_seed_jobs(prompts: Sequence[Prompt], n_per_prompt: int, base: int, avoid: Sequence[int],
                     seed: int = 0) -> list[Job]:
    """The control's jobs: every prompt under `n_per_prompt` seeds drawn at random from [base, base + 100000),
    none of them a mining seed."""
    import numpy as np

    rng, avoid, jobs = np.random.default_rng(seed), set(avoid), []
    for p in prompts:
        seeds: list[int] = []
        while len(seeds) < n_per_prompt:
            s = int(base + rng.integers(100_000))
            if s not in avoid and s not in seeds:
                seeds.append(s)
        jobs.extend(make_jobs([p], seeds))
    return jobs


def validation_split(prompts: Sequence[Prompt], share: float, seed: int = 0) -> tuple[list[Prompt], list[Prompt]]:
    """(fit, validation): `share` of each kind's prompts (at least one when share > 0, never all) for choosing
    fine-tune settings; every dataset is built from the rest. The validation prompts are a balanced sample
    (`prompts.balanced` with `seed`): spread over every factor and pair of factors, so both parts cover
    every object, background, count and relation."""
    from .prompts import balanced

    if share <= 0:
        return list(prompts), []
    val_ids: set[str] = set()
    for kind in sorted({p.kind for p in prompts}):
        ps = [p for p in prompts if p.kind == kind]
        n = min(len(ps) - 1, max(1, round(share * len(ps))))
        val_ids.update(p.id for p in balanced(ps, n, seed=seed + 1))  # not the sample `limit` takes
    return [p for p in prompts if p.id not in val_ids], [p for p in prompts if p.id in val_ids]


def fit_prompts(cfg) -> list[Prompt]:
    """The training prompts the datasets are built from: `prompts.for_dataset`, less the validation share
    (dataset.validation)."""
    from .prompts import for_dataset

    return validation_split(for_dataset(cfg), cfg.dataset.validation, cfg.mining.split_seed)[0]


def ceiling_dataset(run: Run, table: pd.DataFrame, prompts: Sequence[Prompt], cfg,
                    stage: str = f"{STAGE}_ceiling") -> pd.DataFrame:
    """The ceiling arm's data (mini world): for every image the top-seed dataset keeps, a freshly rendered
    ground-truth scene of its prompt (the renderer draws exactly what the prompt says; the seed draws the
    layout) captioned with the prompt. Same prompts, same number of images: only the pictures are right by
    construction, so a fine-tune on it bounds what better data alone can do. Rendering is deterministic and
    takes milliseconds, so a re-run renders again and writes the same bytes."""
    from .generate import write_batch
    from .miniworld import render_count, render_relation
    from .miniworld.vocab import DEFAULT_BACKGROUND

    by_id = {p.id: p for p in prompts}
    keep = table[table["status"] != DROPPED]
    jobs = [Job(by_id[r.prompt_id], int(r.seed)) for r in keep.itertuples()]
    size, images = cfg.generate.height, []
    for job in jobs:
        p = job.prompt
        scene = (render_count(p.obj.name, int(p.count), p.background, seed=job.seed, size=size) if p.kind == "count"
                 else render_relation(p.obj.name, p.relation, p.obj_b.name, p.background or DEFAULT_BACKGROUND,
                                      seed=job.seed, size=size))
        images.append(scene.image.convert("RGB"))
    settings = dict(model="miniworld-renderer", sampler="render", steps=0, guidance=0.0, height=size, width=size,
                    generator_device="cpu", dtype="uint8")
    write_batch(run, stage, jobs, images, settings, run.ledger)
    files = run.ledger.images(stage).set_index(["prompt_id", "seed"])
    keys = list(zip(keep["prompt_id"], keep["seed"].astype(int)))
    return keep.assign(stage=stage, text=keep["prompt"], status=KEPT, reason="rendered ground truth", judged=None,
                       path=[files.loc[k, "path"] for k in keys], sha256=[files.loc[k, "sha256"] for k in keys])


def build_datasets(run: Run, pipe, info: dict, top: pd.DataFrame, cfg,
                   progress: bool = True) -> dict[str, pd.DataFrame]:
    """The paper's dataset and its controls, as imagefolders in the run directory:
    `dataset/` (top seeds, rectified), `dataset_random_seeds/` (random seeds, rectified, as many images as
    `dataset/` keeps), `dataset_unrectified/` (the top-seed images with their prompts as captions) and,
    when the `qk_ceiling` arm is evaluated, `dataset_ceiling/` (ground-truth renders of the same prompts,
    as many as `dataset/` keeps). The prompts are `fit_prompts`: every training prompt (dataset.prompts), less
    the validation share (dataset.validation)."""
    prompts = fit_prompts(cfg)
    jobs = dataset_jobs(prompts, top, cfg.dataset.per_prompt, cfg.dataset.seed_choice)
    main = build_dataset(run, pipe, info, prompts, jobs, cfg, STAGE, progress)
    per_prompt = max(1, round(len(jobs) / max(1, len(prompts))))
    rjobs = random_seed_jobs(prompts, per_prompt, cfg.dataset.random_seed_base, cfg.generate.seeds,
                             seed=cfg.mining.split_seed)
    rand = build_dataset(run, pipe, info, prompts, rjobs, cfg, f"{STAGE}_random", progress)
    n_main = int((main["status"] != DROPPED).sum())
    kept = rand[rand["status"] != DROPPED]
    if len(kept) > n_main:  # same size as the paper's dataset: drop a random surplus (recorded as such)
        surplus = kept.sample(len(kept) - n_main, random_state=cfg.mining.split_seed).index
        rand.loc[surplus, ["status", "reason", "text"]] = [DROPPED, "size matched to the top-seed dataset", None]
    unrect = main.assign(text=main["prompt"], status=KEPT, reason="caption as prompted")
    tables = {"dataset": main, "dataset_random_seeds": rand, "dataset_unrectified": unrect}
    if "qk_ceiling" in cfg.evaluate.arms:
        tables["dataset_ceiling"] = ceiling_dataset(run, main, prompts, cfg)
    for name, t in tables.items():  # each imagefolder written once, after its captions are final
        export_imagefolder(run, t, run.root / name)
        run.save_table(t, f"{name}_captions")
    return tables
