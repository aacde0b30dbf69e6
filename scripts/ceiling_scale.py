"""How much exact data does it take? The ceiling arm of an effect run, scaled up.

The effect runs (`compseed effect configs/effect/all.yaml`) fine-tune on as many images as the top-seed
dataset keeps (120) for the steps the validation grid chose. This script asks whether *more* exact data
and more steps move the generator: it renders `--images` ground-truth scenes of the run's dataset prompts
(never the validation or held-out prompts; fresh layout seeds from 300000), captioned with the prompts,
fine-tunes q/k with the run's selection for `--steps` at `--lr`, and scores the result on the run's
held-out prompts and evaluation seeds against the run's base arm (the paired table of notebook 07).

Usage:
    .venv/bin/python scripts/ceiling_scale.py runs/effect-pixart-web --images 1200 --steps 1000 --lr 1e-4
    .venv/bin/python scripts/ceiling_scale.py runs/effect-pixart-web --patterns '.*' --tag all   # every weight
    .venv/bin/python scripts/ceiling_scale.py runs/effect-sd-web --text-encoder '.*' --tag te   # q/k + text encoder
Writes runs/<run>/dataset_ceiling_<images>/, finetune/ceiling_<images>_<steps>[_tag]/ and
tables/ceiling_scale_ceiling_<images>_<steps>[_tag].csv; prints counting and spatial accuracy with gain, interval and p.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compseed_lib import dataset, evaluate, finetune  # noqa: E402
from compseed_lib.generate import make_jobs  # noqa: E402
from compseed_lib.store import Run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a finished effect run, e.g. runs/effect-pixart-web")
    ap.add_argument("--images", type=int, default=1200)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--patterns", nargs="+", help="train these weights (regexes over parameter names, e.g. "
                                                  "'.*' for the whole denoiser) instead of the run's q/k selection")
    ap.add_argument("--text-encoder", nargs="+", metavar="PATTERN",
                    help="train these text-encoder weights too (regexes over its parameter names, e.g. '.*'); "
                         "the paper keeps it frozen")
    ap.add_argument("--tag", default="", help="a name for this variant (folders and stages)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = Run.open(args.run)
    cfg = run.config()
    fit = dataset.fit_prompts(cfg)
    per = -(-args.images // len(fit))
    jobs = make_jobs(fit, [300_000 + i for i in range(per)])[:args.images]
    rows = pd.DataFrame([dict(prompt_id=j.prompt.id, seed=j.seed, prompt=j.prompt.text, kind=j.prompt.kind,
                              category=j.prompt.category, target=j.prompt.target, status=dataset.KEPT)
                         for j in jobs])
    name = f"ceiling_{args.images}"
    table = dataset.ceiling_dataset(run, rows, fit, cfg, stage=f"dataset_{name}")
    folder = dataset.export_imagefolder(run, table, run.root / f"dataset_{name}")
    ft = dataclasses.replace(cfg.finetune, method="qk", steps=args.steps, lr=args.lr, grid=None)
    if args.patterns:
        ft = dataclasses.replace(ft, patterns=args.patterns, blocks=None)
    if args.text_encoder:
        ft = dataclasses.replace(ft, text_encoder=args.text_encoder)
    variant = f"{name}_{args.steps}{'_' + args.tag if args.tag else ''}"
    target = run.root / "finetune" / variant / "model"
    finetune.trained(run, cfg.model.pipeline, folder, ft, target, f"eval_{variant}", device=cfg.model.device)
    out = evaluate.against_base(run, cfg, str(target), variant)
    run.save_table(out, f"ceiling_scale_{variant}")
    cols = ["arm", "level", "n", "accuracy", "relative_gain", "diff_lo", "diff_hi", "mcnemar_p"]
    print(out[out["level"].isin(["count", "spatial"])][[c for c in cols if c in out]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
