"""The paper's effect, measured across generators: one table in the paper's shape, beside the paper's numbers.

`configs/effect/all.yaml` lists generators (clean-caption models and their web-caption twins), each a chain
config plus overrides. `compseed effect configs/effect/all.yaml` runs each chain (resumable; a generator whose
model folder is not there yet is reported, not run) and writes `reports/effect/README.md`: for every
generator and arm, counting and spatial accuracy on the held-out prompts, the paper's relative gain
((arm - base) / base), its 95% interval (the paired bootstrap interval of the difference over prompts,
divided by the base accuracy) and the paired McNemar p, beside the gains the paper reports; plus a figure
of the relative gains with their intervals.

Usage:
    compseed effect configs/effect/all.yaml                 # run what is missing, then the table
    compseed effect configs/effect/all.yaml --table-only    # the table from the runs as they are
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .config import ConfigError, load_config, load_dataclass
from .report import markdown_table

log = logging.getLogger(__name__)
# Relative gains of the paper's q/k fine-tune on its top-seed dataset, as the paper reports them (ICLR 2025,
# "Enhancing Compositional Text-to-Image Generation with Reliable Random Seeds").
PAPER_GAINS = {"SD 2.1": {"count": 0.293, "spatial": 0.607}, "PixArt-α": {"count": 0.195, "spatial": 0.211}}
KINDS = ("count", "spatial")
HELD_OUT, IN_DISTRIBUTION = "held-out prompts", "training prompts, new seeds"  # the two evaluations


@dataclass
class Generator:
    name: str  # the run's name (runs/<name>, reports/<name>)
    label: str  # how the table names it
    config: str  # the chain config
    paper: str  # the paper's model it stands for: a key of PAPER_GAINS
    captions: str = "clean"  # clean | web: what its training captions said
    set: list[str] = field(default_factory=list)  # overrides of the chain config


@dataclass
class EffectConfig:
    generators: list[Generator] = field(default_factory=list)
    reports: str = "reports"
    out: str = "reports/effect"


def load(path: str | Path) -> EffectConfig:
    cfg = load_dataclass(EffectConfig, path)
    for g in cfg.generators:
        if g.paper not in PAPER_GAINS:
            raise ConfigError(f"{path}: generator {g.name!r}: paper must be one of {sorted(PAPER_GAINS)}, "
                              f"got {g.paper!r}")
        if g.captions not in ("clean", "web"):
            raise ConfigError(f"{path}: generator {g.name!r}: captions must be 'clean' or 'web', got {g.captions!r}")
    if not cfg.generators:
        raise ConfigError(f"{path}: no generators listed")
    return cfg


def overrides(g: Generator) -> list[str]:
    """The generator's overrides of its chain config, its run name last."""
    return [*g.set, f"name={g.name}"]


def chain_config(g: Generator):
    """The generator's run config (its chain config, its overrides, its name)."""
    return load_config(g.config, overrides(g))


def model_missing(g: Generator) -> str | None:
    """Why the generator cannot run yet (its model folder is not there), or None."""
    from .sources import ModelLoadError, check_source

    try:
        check_source(chain_config(g).model)
    except ModelLoadError as e:
        return str(e)
    return None


def run_all(cfg: EffectConfig, show: bool = True) -> dict[str, str]:
    """Run (or resume) each generator's chain; {name: 'done' | why it was not run}."""
    from .chain import run_chain

    status = {}
    for g in cfg.generators:
        why = model_missing(g)
        if why:
            log.warning("effect: %s not run: %s", g.name, why)
            status[g.name] = f"not run: {why}"
            continue
        run_chain(g.config, overrides=overrides(g), report_root=cfg.reports, show=show)
        status[g.name] = "done"
    return status


def _row(table: pd.DataFrame, arm: str, level: str) -> pd.Series | None:
    sub = table[(table["arm"] == arm) & (table["level"] == level)]
    return None if sub.empty else sub.iloc[0]


def run_gains(table: pd.DataFrame, paper: str, **labels) -> list[dict]:
    """One row per arm of a run's evaluation table (07_evaluate): accuracy, relative gain over base, its 95%
    interval and McNemar p per kind, and the paper's q/k gain (`paper`: a key of PAPER_GAINS) on the q/k row;
    `labels` (generator, captions, ...) lead each row."""
    rows = []
    for arm in dict.fromkeys(table["arm"]):
        row = {**labels, "paper_model": paper, "arm": arm}
        for kind in KINDS:
            r, b = _row(table, arm, kind), _row(table, "base", kind)
            if r is None or b is None:
                continue
            row[f"{kind}_accuracy"], row[f"{kind}_n"] = r["accuracy"], int(r["n"])
            if arm != "base" and b["accuracy"]:
                row[f"{kind}_gain"] = r["relative_gain"]
                row[f"{kind}_gain_lo"] = r["diff_lo"] / b["accuracy"]
                row[f"{kind}_gain_hi"] = r["diff_hi"] / b["accuracy"]
                row[f"{kind}_p"] = r.get("mcnemar_p", np.nan)
                row[f"{kind}_paper_gain"] = PAPER_GAINS[paper][kind] if arm == "qk" else np.nan
        rows.append(row)
    return rows


def effect_table(cfg: EffectConfig) -> pd.DataFrame:
    """One row per (generator, arm) with accuracy, relative gain, its interval and p per kind."""
    from .store import Run

    rows = []
    for g in cfg.generators:
        run_dir = chain_config(g).run_dir
        try:
            run = Run.open(run_dir)
            table = run.load_table("evaluation")
        except (FileNotFoundError, ValueError):
            log.warning("effect: %s has no evaluation table in %s yet", g.name, run_dir)
            continue
        rows += run_gains(table, g.paper, generator=g.label, captions=g.captions, evaluation=HELD_OUT)
        try:
            rows += run_gains(run.load_table("evaluation_in_distribution"), g.paper, generator=g.label,
                              captions=g.captions, evaluation=IN_DISTRIBUTION)
        except FileNotFoundError:
            pass
    return pd.DataFrame(rows)


def paper_model_for(pipeline: str) -> str:
    """The paper's model a pipeline stands for: PixArt-α for a PixArt-shaped one (by name), else SD 2.1."""
    return "PixArt-α" if "pixart" in str(pipeline).lower() else "SD 2.1"


def paper_gains_text(paper: str) -> str:
    """The paper's q/k gains for one of its models as the tables show them: '+29.3% / +60.7%'."""
    return f"+{PAPER_GAINS[paper]['count']:.1%} / +{PAPER_GAINS[paper]['spatial']:.1%}"


def direction(lo: float, hi: float) -> str:
    """Which way an arm went, read from the 95% interval of its gain: 'gain', 'loss' or 'no clear change'."""
    if pd.isna(lo) or pd.isna(hi):
        return "–"
    return "gain" if lo > 0 else "loss" if hi < 0 else "no clear change"


def beside_paper(table: pd.DataFrame, paper: str) -> pd.DataFrame:
    """A run's evaluation table (07_evaluate) in the paper's shape, for a notebook: per arm, counting and
    spatial as 'accuracy (gain [95% interval], p)', which way each went by its interval, and the paper's
    q/k gain on the q/k row."""
    out = []
    for r in map(pd.Series, run_gains(table, paper)):
        row = {"arm": r["arm"]}
        for kind, name in (("count", "counting"), ("spatial", "spatial")):
            row[name] = _fmt_cell(r, kind)
            row[f"{name}: direction"] = ("" if r["arm"] == "base" else
                                         direction(r.get(f"{kind}_gain_lo", np.nan), r.get(f"{kind}_gain_hi", np.nan)))
        row[f"paper (q/k, {paper})"] = paper_gains_text(paper) if r["arm"] == "qk" else ""
        out.append(row)
    return pd.DataFrame(out)


def dataset_table(cfg: EffectConfig) -> pd.DataFrame:
    """Per generator and kind: how often the top-seed and the random-seed datasets' images were right as
    prompted (kept unchanged) and how often rectified, and the fine-tune setting chosen on the validation
    prompts with its validation accuracy against base's."""
    from .dataset import KEPT, RECTIFIED
    from .store import Run

    rows = []
    for g in cfg.generators:
        try:
            run = Run.open(chain_config(g).run_dir)
            tables = {name: run.load_table(f"{name}_captions") for name in ("dataset", "dataset_random_seeds")}
        except (FileNotFoundError, ValueError):
            continue
        try:
            grid = run.load_table("finetune_grid")
            chosen, base = grid[grid["chosen"].astype(bool)].iloc[0], grid[grid["steps"] == 0].iloc[0]
            weights = f"{chosen['weights']} weights, " if "weights" in grid else ""
            setting = (f"{weights}{int(chosen['steps'])} steps, lr {chosen['lr']:g}: {chosen['accuracy']:.3f} "
                       f"(base {base['accuracy']:.3f})")
        except (FileNotFoundError, IndexError, KeyError):
            setting = "as configured"
        for kind in KINDS:
            row = {"generator": g.label, "captions": g.captions, "kind": kind}
            for name, label in (("dataset", "top seeds"), ("dataset_random_seeds", "random seeds")):
                t = tables[name][tables[name]["kind"] == kind]
                status = t["status"].value_counts()
                row[f"{label}: right as prompted"] = status.get(KEPT, 0) / len(t) if len(t) else np.nan
                row[f"{label}: rectified"] = status.get(RECTIFIED, 0) / len(t) if len(t) else np.nan
                row[f"{label}: images"] = int(len(t))
            row["setting chosen on validation (accuracy)"] = setting
            rows.append(row)
    return pd.DataFrame(rows)


def grid_table(cfg: EffectConfig) -> pd.DataFrame:
    """Every generator's validation grid (tables/finetune_grid.csv): which weights, steps and lr, the epochs
    over its top-seed dataset, and the accuracy on the validation prompts beside its base model's."""
    from .store import Run

    rows = []
    for g in cfg.generators:
        try:
            run = Run.open(chain_config(g).run_dir)
            grid = run.load_table("finetune_grid")
            images = int((run.load_table("dataset_captions")["status"] != "dropped").sum())
            batch = run.config().finetune.batch
        except (FileNotFoundError, ValueError):
            continue
        base = grid[grid["steps"] == 0].iloc[0]
        for r in grid[grid["steps"] > 0].itertuples():
            rows.append({"generator": g.label, "captions": g.captions, "weights": getattr(r, "weights", "qk"),
                         "steps": int(r.steps), "lr": f"{r.lr:g}",
                         "epochs": round(r.steps * batch / max(1, images), 1),
                         "counting": f"{r.accuracy_count:.3f} (base {base['accuracy_count']:.3f})",
                         "spatial": f"{r.accuracy_spatial:.3f} (base {base['accuracy_spatial']:.3f})",
                         "chosen": "yes" if r.chosen else ""})
    return pd.DataFrame(rows)


def _fmt_cell(r: pd.Series, kind: str) -> str:
    acc = r.get(f"{kind}_accuracy")
    if acc is None or pd.isna(acc):
        return "–"
    if r["arm"] == "base" or pd.isna(r.get(f"{kind}_gain", np.nan)):
        return f"{acc:.3f}"
    p = r.get(f"{kind}_p", np.nan)
    p_text = "" if pd.isna(p) else (f", p {p:.2g}" if p >= 1e-4 else ", p < 1e-4")
    return (f"{acc:.3f} ({r[f'{kind}_gain']:+.1%} [{r[f'{kind}_gain_lo']:+.1%}, {r[f'{kind}_gain_hi']:+.1%}]"
            f"{p_text})")


def markdown(table: pd.DataFrame) -> str:
    """The README table: per generator and arm, counting and spatial as 'accuracy (gain [95% interval], p)'
    and the paper's gain on the q/k row."""
    lines = ["| generator | captions | evaluated on | arm | counting | spatial | paper (q/k): counting / spatial |",
             "|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        r = pd.Series(r._asdict())
        paper = f"{paper_gains_text(r['paper_model'])} ({r['paper_model']})" if r["arm"] == "qk" else ""
        lines.append(f"| {r['generator']} | {r['captions']} | {r.get('evaluation', HELD_OUT)} | {r['arm']} | "
                     f"{_fmt_cell(r, 'count')} | {_fmt_cell(r, 'spatial')} | {paper} |")
    return "\n".join(lines)


def plot_gains(table: pd.DataFrame):
    """Relative gain of every arm over base per kind and generator, with 95% intervals; the paper's q/k gain
    as a marker."""
    from matplotlib.figure import Figure

    arms = [a for a in dict.fromkeys(table["arm"]) if a != "base"]
    gens = list(dict.fromkeys(table["generator"]))
    fig = Figure(figsize=(5.5 * len(KINDS), 0.5 + 0.45 * len(arms) * max(1, len(gens))))
    axes = fig.subplots(1, len(KINDS), squeeze=False, sharey=True)[0]
    colors = {g: f"C{i}" for i, g in enumerate(gens)}
    for ax, kind in zip(axes, KINDS):
        y, labels = 0, []
        for arm in arms:
            for g in gens:
                r = table[(table["arm"] == arm) & (table["generator"] == g)]
                if not r.empty and f"{kind}_gain" in r and not pd.isna(r.iloc[0].get(f"{kind}_gain", np.nan)):
                    r = r.iloc[0]
                    ax.errorbar(r[f"{kind}_gain"], y, xerr=[[r[f"{kind}_gain"] - r[f"{kind}_gain_lo"]],
                                                            [r[f"{kind}_gain_hi"] - r[f"{kind}_gain"]]],
                                fmt="o", color=colors[g], capsize=2, label=g if arm == arms[0] else None)
                    if arm == "qk":
                        ax.plot(PAPER_GAINS[r["paper_model"]][kind], y, marker="*", color=colors[g], ms=11,
                                markeredgecolor="black", linestyle="none")
                labels.append(f"{arm}")
                y += 1
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("relative gain over base (95% interval)")
        ax.set_title(f"{'counting' if kind == 'count' else 'spatial'} (★: the paper's q/k gain)", fontsize=10)
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:+.0%}")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def write_report(cfg: EffectConfig, status: dict[str, str] | None = None) -> Path:
    """reports/effect/README.md (the table, what is missing) and gains.png; effect.csv beside them."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    table = effect_table(cfg)
    text = ["# The paper's effect on the mini-world generators", "",
            "Accuracy on the held-out prompts (new objects and backgrounds, the paper's evaluation) and on the "
            f"datasets' own training prompts under seeds no dataset image used ({IN_DISTRIBUTION}); in brackets "
            "the paper's relative gain over base, (arm − base) / base, with its 95% interval (paired bootstrap over "
            "prompts of the difference, over the base accuracy) and the paired McNemar p. Rerun: "
            "`compseed effect configs/effect/all.yaml`.", ""]
    if table.empty:
        text += ["No generator has an evaluation table yet.", ""]
    else:
        table.to_csv(out / "effect.csv", index=False)
        text += [markdown(table), "", "![relative gains](gains.png)", ""]
        ev = table["evaluation"] if "evaluation" in table else pd.Series(HELD_OUT, index=table.index)
        plot_gains(table[ev == HELD_OUT]).savefig(out / "gains.png", dpi=120)
        if (ev == IN_DISTRIBUTION).any():
            plot_gains(table[ev == IN_DISTRIBUTION]).savefig(out / "gains_in_distribution.png", dpi=120)
            text += [f"In distribution ({IN_DISTRIBUTION}): ![relative gains](gains_in_distribution.png)", ""]
        data = dataset_table(cfg)
        if len(data):
            text += ["The datasets: share of each dataset's images the judge found right as prompted (kept "
                     "unchanged) and rectified, top seeds against random seeds (the top seeds were chosen on "
                     "these prompts), and the fine-tune setting the validation prompts chose:", "",
                     markdown_table(data), ""]
        grids = grid_table(cfg)
        if len(grids):
            text += ["The validation grids: every setting fine-tuned on the top-seed dataset and scored on the "
                     "validation prompts (never the evaluation prompts or seeds); the chosen one trains every arm:",
                     "", markdown_table(grids), ""]
    missing = {k: v for k, v in (status or {}).items() if v != "done"}
    if missing:
        text += ["Not run:", "", *[f"- {k}: {v}" for k, v in missing.items()], ""]
    (out / "README.md").write_text("\n".join(text))
    return out / "README.md"


def main(argv: list[str] | None = None) -> int:
    """`compseed effect CONFIG [--table-only]`."""
    import argparse

    ap = argparse.ArgumentParser(prog="compseed effect", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a YAML list of generators (configs/effect/all.yaml)")
    ap.add_argument("--table-only", action="store_true", help="write the table from the runs as they are")
    ap.add_argument("--quiet", action="store_true", help="no live progress from the chains")
    args = ap.parse_args(argv)
    cfg = load(args.config)
    status = None if args.table_only else run_all(cfg, show=not args.quiet)
    print(write_report(cfg, status))
    return 0
