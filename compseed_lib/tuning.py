"""Choose the fine-tune's steps and learning rate on validation prompts, never on the evaluation set.

`dataset.validation` keeps a share of the training prompts out of every dataset (dataset.validation_split);
`finetune.grid` lists the settings to try. Each (steps, lr) fine-tunes q/k on the top-seed dataset, draws the
validation prompts under the grid's own seeds (disjoint from the mining and evaluation seeds), and is scored
by the run's judge. The most accurate setting (ties: fewer steps, then the smaller lr) is the one every
fine-tuned arm then uses (evaluate.train_arms).

Inputs: a Run with `dataset/` (notebook 05), its config.
Outputs: `finetune/grid/<setting>/model/` per setting, stages `val_<setting>` in the ledger,
`tables/finetune_grid.csv` (steps, lr, images, accuracy per kind, chosen).

Usage:
    grid = tuning.run_grid(run, cfg)          # resumable: finished fine-tunes and images are kept
    ft = tuning.chosen_finetune(run, cfg)     # cfg.finetune with the chosen steps and lr
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import pandas as pd

from .config import GRID_WEIGHTS
from .store import Run

log = logging.getLogger(__name__)
TABLE = "finetune_grid"


def setting_name(steps: int, lr: float, weights: str = "qk") -> str:
    """A folder- and stage-safe name of one setting: 's200_lr0.0003', 'all_s200_lr0.0003' for other weights."""
    return ("" if weights == "qk" else f"{weights}_") + f"s{int(steps)}_lr{float(lr):g}"


def validation_prompts(cfg) -> list:
    """The validation share of the run's training prompts (empty when dataset.validation is 0)."""
    from .dataset import validation_split
    from .prompts import for_dataset

    return validation_split(for_dataset(cfg), cfg.dataset.validation, cfg.mining.split_seed)[1]


def run_grid(run: Run, cfg, progress: bool = True) -> pd.DataFrame:
    """Fine-tune, generate and judge every setting of `finetune.grid` on the validation prompts; the grid
    table (saved as tables/finetune_grid.csv) with the chosen row marked."""
    from . import finetune
    from .generate import generate, make_jobs
    from .judge import judge_stage
    from .pipelines import load_pipeline

    grid = cfg.finetune.grid
    if grid is None:
        raise ValueError("finetune.grid is not set: nothing to choose (see configs/effect-*.yaml)")
    val = validation_prompts(cfg)
    if not val:
        raise ValueError("finetune.grid needs validation prompts: set dataset.validation (e.g. 0.25)")
    rows = []
    for weights in grid.weights:
        for steps in grid.steps:
            for lr in grid.lr:
                name = setting_name(steps, lr, weights)
                target = run.root / "finetune" / "grid" / name / "model"
                ft = finetune.widened(dataclasses.replace(cfg.finetune, method="qk", steps=int(steps), lr=float(lr),
                                                          grid=None), weights)
                stage = f"val_{name}"
                finetune.trained(run, cfg.model.pipeline, run.root / "dataset", ft, target, stage,
                                 device=cfg.model.device, progress=progress)
                pipe, info = load_pipeline(dataclasses.replace(cfg.model, pipeline=str(target)))
                generate(run, stage, pipe, info, make_jobs(val, grid.seeds), cfg.generate, progress=progress)
                judged = judge_stage(run, stage, val, cfg.judge, progress=progress)
                rows.append({"weights": weights, "steps": int(steps), "lr": float(lr), **_accuracy(judged)})
    base_stage = "val_base"
    pipe, info = load_pipeline(cfg.model)
    generate(run, base_stage, pipe, info, make_jobs(val, grid.seeds), cfg.generate, progress=progress)
    base = _accuracy(judge_stage(run, base_stage, val, cfg.judge, progress=progress))
    table = pd.DataFrame(rows)
    table["_order"] = table["weights"].map({w: i for i, w in enumerate(GRID_WEIGHTS)})
    best = table.sort_values(["accuracy", "_order", "steps", "lr"], ascending=[False, True, True, True]).index[0]
    table["chosen"] = table.index == best
    table = table.drop(columns="_order")
    table = pd.concat([pd.DataFrame([{"weights": "none", "steps": 0, "lr": 0.0, **base, "chosen": False}]), table],
                      ignore_index=True)  # row 0: the base model on the same prompts and seeds
    run.save_table(table, TABLE)
    log.info("fine-tune settings chosen on %d validation prompts x %d seeds: weights %s, steps %d, lr %g "
             "(accuracy %.3f; base %.3f)", len(val), len(grid.seeds), table.loc[table["chosen"], "weights"].iloc[0],
             table.loc[table["chosen"], "steps"].iloc[0],
             table.loc[table["chosen"], "lr"].iloc[0], table.loc[table["chosen"], "accuracy"].iloc[0],
             base["accuracy"])
    return table


def _accuracy(judged: pd.DataFrame) -> dict:
    """Accuracy over known answers, overall and per kind, with the number of judged images."""
    known = judged.dropna(subset=["correct"])
    acc = float(known["correct"].astype(bool).mean()) if len(known) else float("nan")
    out = {"images": len(judged), "accuracy": acc}
    for kind, g in known.groupby("kind"):
        out[f"accuracy_{kind}"] = float(g["correct"].astype(bool).mean())
    return out


def chosen_finetune(run: Run, cfg, method: str = "qk"):
    """cfg.finetune with the grid's chosen steps and lr, and its chosen weights for the q/k method (as
    configured when there is no grid). A LoRA adapts the configured projections whatever the grid chose: an
    adapter on every weight is another method."""
    from .finetune import widened

    if cfg.finetune.grid is None:
        return cfg.finetune
    try:
        t = run.load_table(TABLE)
    except FileNotFoundError:
        raise FileNotFoundError(f"{run.root}/tables/{TABLE}.csv is missing: with finetune.grid set, the grid "
                                "(notebook 06, tuning.run_grid) chooses the fine-tune settings before any arm "
                                "trains") from None
    row = t[t["chosen"].astype(bool)].iloc[0]
    ft = dataclasses.replace(cfg.finetune, steps=int(row["steps"]), lr=float(row["lr"]), grid=None)
    return widened(ft, str(row.get("weights", "qk"))) if method == "qk" else ft


def grid_pivot(table: pd.DataFrame, value: str = "accuracy") -> pd.DataFrame:
    """(weights, steps) x lr of one column of the grid table (the base row left out), for the notebook."""
    t = table[table["steps"] > 0]
    if "weights" not in t:
        t = t.assign(weights="qk")
    return t.pivot(index=["weights", "steps"], columns="lr", values=value)


def plot_grid(table: pd.DataFrame, kinds: Sequence[str] = ("accuracy", "accuracy_count", "accuracy_spatial")):
    """Heatmaps of validation accuracy over steps x lr, the chosen cell outlined, the base model in the title."""
    from matplotlib.figure import Figure

    cols = [k for k in kinds if k in table]
    fig = Figure(figsize=(3.2 * len(cols), max(2.8, 0.3 * len(grid_pivot(table)) + 1.2)))
    axes = fig.subplots(1, len(cols), squeeze=False)[0]
    base = table[table["steps"] == 0].iloc[0]
    chosen = table[table["chosen"].astype(bool)].iloc[0]
    for ax, col in zip(axes, cols):
        piv = grid_pivot(table, col)
        im = ax.imshow(piv.to_numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(piv.columns)), [f"{c:g}" for c in piv.columns])
        ax.set_yticks(range(len(piv.index)), [f"{w} {s}" if w != "qk" else str(s) for w, s in piv.index])
        pick = (chosen.get("weights", "qk"), chosen["steps"])
        for i, ws in enumerate(piv.index):
            for j, lr in enumerate(piv.columns):
                ax.text(j, i, f"{piv.iloc[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if piv.iloc[i, j] < 0.6 else "black",
                        fontweight="bold" if (tuple(ws), lr) == (pick, chosen["lr"]) else "normal")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("weights, steps")
        ax.set_title(f"{col.replace('accuracy_', '') if col != 'accuracy' else 'all'} (base {base[col]:.2f})",
                     fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("fine-tune settings on validation prompts (bold: chosen)", fontsize=10)
    fig.tight_layout()
    return fig
