"""Paired evaluation of the paper's arms on held-out prompts: does fine-tuning on reliable seeds help?

Arms (config `evaluate.arms`):
  base             the base model on the evaluation seeds (disjoint from the mining seeds)
  top_seeds        the base model on the mined top seeds of each prompt's category
  qk, lora         the fine-tunes on the rectified top-seed dataset (notebook 06)
  qk_random_seeds  control: q/k fine-tune on a same-size dataset from random seeds, rectified the same way
  qk_unrectified   control: q/k fine-tune on the top-seed images with their prompts as captions
  qk_ceiling       bound (mini world): q/k fine-tune on rendered ground-truth scenes of the same prompts,
                   as many images, captioned with the prompts
Fine-tunes use finetune.steps / lr, or the setting `finetune.grid` chose on validation prompts (tuning.py).
Every arm but top_seeds uses the same (prompt, seed) pairs, so arm vs base is paired: an exact McNemar
test on the discordant pairs, and for every arm a paired bootstrap over prompts (95% interval of the
accuracy difference; top_seeds is paired by prompt only). Unknown answers are left out, pairwise, and counted.

Inputs: a Run (finished stages 03 and 06), the held-out prompts, the run's config.
Outputs: per-arm judged rows (stage `eval_<arm>`), `arm_table` (accuracy overall / per kind / per
category with Wilson intervals, unknowns, gain vs base in the paper's relative sense, p-values) and a
per-count figure.

Usage:
    judged = {arm: run_arm(run, arm, prompts, top, cfg) for arm in cfg.evaluate.arms}
    table = arm_table(judged, n_bootstrap=2000)
    fig = plot_per_category(table)
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .config import eval_judge
from .dataset import dataset_jobs
from .generate import Job, make_jobs
from .prompts import Prompt
from .stats import mcnemar, paired_bootstrap, wilson_interval
from .store import Run

log = logging.getLogger(__name__)
FINETUNED = {"qk": ("qk", "dataset"), "lora": ("lora", "dataset"), "qk_random_seeds": ("qk", "dataset_random_seeds"),
             "qk_unrectified": ("qk", "dataset_unrectified"),
             "qk_ceiling": ("qk", "dataset_ceiling")}  # arm -> (method, dataset folder)


def finetune_dir(run: Run, arm: str) -> Path:
    """Where notebook 06 writes an arm's fine-tune (a folder `pipelines.load_pipeline` loads)."""
    return run.root / "finetune" / arm / "model"


def arm_model(run: Run, arm: str, base: str) -> str:
    """The model an arm generates with: the base model, or the arm's fine-tune folder."""
    if arm in FINETUNED:
        folder = finetune_dir(run, arm)
        if not folder.is_dir():
            raise FileNotFoundError(f"arm {arm!r} needs its fine-tune at {folder}: run 06_finetune first")
        return str(folder)
    return base


def arm_jobs(arm: str, prompts: Sequence[Prompt], seeds: Sequence[int], top: pd.DataFrame | None) -> list[Job]:
    """(prompt, seed) pairs of an arm: the evaluation seeds, or each category's mined top seeds."""
    if arm != "top_seeds":
        return make_jobs(prompts, seeds)
    if top is None:
        raise ValueError("arm 'top_seeds' needs the mined top seeds (tables/top_seeds.csv, notebook 03)")
    return dataset_jobs(prompts, top)  # the same rule the dataset uses: each category's top seeds


HELD_OUT_STAGE, IN_DISTRIBUTION_STAGE = "eval", "indist"  # stage prefixes: held-out and training prompts


def stage_of(arm: str, prefix: str = HELD_OUT_STAGE) -> str:
    """The image stage of an arm's evaluation: 'eval_qk' on the held-out prompts, 'indist_qk' in distribution."""
    return f"{prefix}_{arm}"


def stages(arm: str) -> tuple[str, str]:
    """The image stages an arm's evaluation writes: held-out prompts, and training prompts in distribution."""
    return stage_of(arm, HELD_OUT_STAGE), stage_of(arm, IN_DISTRIBUTION_STAGE)


def in_distribution_prompts(cfg) -> list[Prompt]:
    """`evaluate.in_distribution` prompts per kind of the datasets' own training prompts (dataset.fit_prompts),
    a balanced sample: every arm is scored on them under the evaluation seeds, which no dataset image used.
    A gain here and none on the held-out prompts is learning the training distribution, not generalising."""
    from .dataset import fit_prompts
    from .prompts import balanced

    fit, n = fit_prompts(cfg), cfg.evaluate.in_distribution
    if n <= 0:
        return []
    return [p for kind in dict.fromkeys(q.kind for q in fit)
            for p in balanced([q for q in fit if q.kind == kind], n, seed=cfg.mining.split_seed + 2)]


def run_arm(run: Run, arm: str, prompts: Sequence[Prompt], top: pd.DataFrame | None, cfg,
            progress: bool = True, pipeline: str | None = None, prefix: str = HELD_OUT_STAGE) -> pd.DataFrame:
    """Generate and judge one arm on the held-out prompts (stage `eval_<arm>`, resumable; `prefix`
    IN_DISTRIBUTION_STAGE for the training prompts); its judged rows.
    `pipeline`: the model of an arm outside the configured ones (default: the arm's own, `arm_model`)."""
    import dataclasses

    from .generate import generate
    from .judge import judge_stage
    from .pipelines import load_pipeline

    model = dataclasses.replace(cfg.model, pipeline=pipeline or arm_model(run, arm, cfg.model.pipeline))
    pipe, info = load_pipeline(model)
    stage = stage_of(arm, prefix)
    generate(run, stage, pipe, info, arm_jobs(arm, prompts, cfg.evaluate.seeds, top), cfg.generate,
             progress=progress)
    judged = judge_stage(run, stage, list(prompts), eval_judge(cfg), progress=progress)
    return judged.assign(arm=arm)


def in_distribution_table(run: Run, cfg, top: pd.DataFrame | None, progress: bool = True) -> pd.DataFrame | None:
    """Every arm on `in_distribution_prompts` under the evaluation seeds (stages `indist_<arm>`, resumable),
    as `arm_table`; None when evaluate.in_distribution is 0."""
    ps = in_distribution_prompts(cfg)
    if not ps:
        return None
    judged = {arm: run_arm(run, arm, ps, top, cfg, progress=progress, prefix=IN_DISTRIBUTION_STAGE)
              for arm in cfg.evaluate.arms}
    return arm_table(judged, n_bootstrap=cfg.evaluate.n_bootstrap, seed=cfg.mining.split_seed)


def against_base(run: Run, cfg, pipeline: str, name: str, progress: bool = True) -> pd.DataFrame:
    """A model outside the configured arms (an experiment's fine-tune folder) scored like an arm: the run's
    held-out prompts under its evaluation seeds (stage `eval_<name>`, resumable), judged by the evaluation
    judge, and `arm_table` against the run's base arm (07_evaluate must have run)."""
    from .judge import judge_stage
    from .prompts import for_config, other_split

    heldout = for_config(cfg.prompts, split=other_split(cfg.prompts.split))
    base = judge_stage(run, "eval_base", heldout, eval_judge(cfg), progress=progress).assign(arm="base")
    judged = {"base": base, name: run_arm(run, name, heldout, None, cfg, progress=progress, pipeline=pipeline)}
    return arm_table(judged, n_bootstrap=cfg.evaluate.n_bootstrap, seed=cfg.mining.split_seed)


def _levels(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    out = [("all", df)]
    out += [(str(k), g) for k, g in df.groupby("kind", sort=True)]
    out += [(str(c), g) for c, g in df.groupby("category", sort=True)]
    return out


def arm_table(judged: dict[str, pd.DataFrame], n_bootstrap: int = 2000, seed: int = 0,
              prompt_paired: Sequence[str] = ("top_seeds",)) -> pd.DataFrame:
    """Accuracy per arm and level (all / kind / category) with Wilson 95% intervals and unknown counts;
    against base: the paper's relative gain, McNemar p on shared (prompt, seed) pairs, and a paired
    bootstrap interval over prompts of the accuracy difference (arms in `prompt_paired`, on other seeds
    than base, are paired by prompt only)."""
    if "base" not in judged:
        raise ValueError("arm_table needs the 'base' arm to compare against")
    rows = []
    base = judged["base"]
    for arm, df in judged.items():
        for level, sub in _levels(df):
            known = sub["correct"].dropna().astype(bool)
            k, n = int(known.sum()), int(len(known))
            lo, hi = wilson_interval(k, n)
            row = dict(arm=arm, level=level, images=len(sub), n=n, n_unknown=int(sub["correct"].isna().sum()),
                       accuracy=k / n if n else np.nan, lo=lo, hi=hi)
            b = dict(_levels(base)).get(level)
            if arm != "base" and b is not None:
                bk = b["correct"].dropna().astype(bool)
                base_acc = bk.mean() if len(bk) else np.nan
                row["gain_vs_base"] = row["accuracy"] - base_acc
                row["relative_gain"] = row["gain_vs_base"] / base_acc if base_acc else np.nan
                row.update(_paired(b, sub, arm not in prompt_paired, n_bootstrap, seed))
            rows.append(row)
    return pd.DataFrame(rows)


def _verdicts(col: pd.Series) -> np.ndarray:
    """True / False / None (unknown) per row, as the paired tests take them."""
    return np.array([None if pd.isna(v) else bool(v) for v in col], dtype=object)


def _paired(base: pd.DataFrame, arm: pd.DataFrame, by_seed: bool, n_bootstrap: int, seed: int) -> dict:
    """McNemar (same prompt and seed) and bootstrap over prompts of arm minus base."""
    out = {}
    if by_seed:
        m = base.merge(arm, on=["prompt_id", "seed"], suffixes=("_b", "_a"))
        b, a = _verdicts(m["correct_b"]), _verdicts(m["correct_a"])
        test = mcnemar(b, a)
        out.update(mcnemar_p=test["p"], pairs=test["n_pairs"], base_only=test["a_only"], arm_only=test["b_only"])
        boot = paired_bootstrap(b, a, m["prompt_id"].to_numpy(), n=n_bootstrap, seed=seed)
    else:  # different seeds: pair per prompt (accuracy over each prompt's images)
        pb = base.dropna(subset=["correct"]).groupby("prompt_id")["correct"].mean()
        pa = arm.dropna(subset=["correct"]).groupby("prompt_id")["correct"].mean()
        common = sorted(set(pb.index) & set(pa.index))
        rng = np.random.default_rng(seed)
        d = (pa[common] - pb[common]).to_numpy(dtype=float)
        draws = rng.integers(0, len(d), size=(n_bootstrap, len(d))) if len(d) else np.zeros((0, 0), int)
        means = d[draws].mean(axis=1) if len(d) else np.array([np.nan])
        boot = {"lo": float(np.quantile(means, 0.025)), "hi": float(np.quantile(means, 0.975))}
    out.update(diff_lo=boot["lo"], diff_hi=boot["hi"])
    return out


def plot_per_category(table: pd.DataFrame, kind_prefix: str = ""):
    """Accuracy per category (count=2 … and relations) for every arm side by side, with Wilson intervals."""
    from matplotlib.figure import Figure

    cats = [c for c in dict.fromkeys(table["level"]) if c not in ("all", "count", "spatial")
            and c.startswith(kind_prefix)]
    arms = list(dict.fromkeys(table["arm"]))
    fig = Figure(figsize=(max(5, 0.9 * len(cats) + 2), 3.2))
    ax = fig.subplots()
    width = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):
        t = table[(table["arm"] == arm)].set_index("level").reindex(cats)
        x = np.arange(len(cats)) + (i - (len(arms) - 1) / 2) * width
        acc = t["accuracy"].to_numpy(dtype=float)
        err = np.clip(np.vstack([acc - t["lo"].to_numpy(dtype=float), t["hi"].to_numpy(dtype=float) - acc]), 0, None)
        ax.bar(x, acc, width, yerr=np.nan_to_num(err), capsize=2, label=arm)
    ax.set_xticks(np.arange(len(cats)))
    ax.set_xticklabels(cats, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (95% Wilson)")
    ax.legend(fontsize=7, ncol=min(3, len(arms)))
    ax.set_title("held-out prompts: accuracy per category and arm", fontsize=9)
    fig.tight_layout()
    return fig


def presence_table(run: Run, arms: Sequence[str], prompts: Sequence[Prompt]) -> pd.DataFrame:
    """Mini world only: per arm, how often the asked kind is drawn and the background is the one asked
    (a fine-tune must not break these), read by the world's exact judge from the stored images."""
    from .miniworld import judge_scene

    by_id = {p.id: p for p in prompts}
    rows = []
    for arm in arms:
        for r in run.ledger.images(f"eval_{arm}").itertuples():
            p = by_id.get(r.prompt_id)
            if p is None:
                continue
            j = judge_scene(np.asarray(run.read_image(r)))
            rows.append(dict(arm=arm, kind_present=j.counts.get(p.obj.name, 0) > 0,
                             background_ok=(j.background == p.background) if p.background else np.nan))
    df = pd.DataFrame(rows)
    return df.groupby("arm", sort=False).agg(images=("kind_present", "size"), kind_present=("kind_present", "mean"),
                                             background_ok=("background_ok", "mean")).reset_index()


def train_arms(run: Run, cfg, progress: bool = True, only: Sequence[str] | None = None) -> dict[str, Path]:
    """Notebook 06 / `compseed finetune`: one fine-tune per fine-tuned arm of `cfg.evaluate.arms` (or of
    `only`), each on its dataset folder (resumable: a finished arm is kept)."""
    import dataclasses

    from . import finetune
    from .tuning import chosen_finetune

    out, settings = {}, {}
    for arm in only or cfg.evaluate.arms:
        if arm not in FINETUNED:
            if only:
                raise ValueError(f"arm {arm!r} has no fine-tune: choose from {sorted(FINETUNED)}")
            continue
        method, folder = FINETUNED[arm]
        target = finetune_dir(run, arm)
        if method not in settings:
            settings[method] = dataclasses.replace(chosen_finetune(run, cfg, method), method=method)
        ft = settings[method]
        # trained again when the grid chose again or the dataset changed; then its evaluation images go
        out[arm] = finetune.trained(run, cfg.model.pipeline, run.root / folder, ft, target, stages(arm),
                                    device=cfg.model.device, progress=progress)
    return out
