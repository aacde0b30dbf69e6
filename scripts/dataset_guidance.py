"""Does the sampler's guidance in the training targets make the model's own images hurt?

The effect runs build the top-seed dataset with the run's sampler settings (10 DDIM steps, guidance 4): a
fine-tune then learns to reproduce classifier-free-guided pictures, and at inference guidance is applied
again on top. This script rebuilds the same top-seed dataset (same prompts, same seeds) at `--guidance`,
judges and rectifies it the same way, fine-tunes q/k with the setting the run's grid chose, and scores it on
the run's held-out prompts and evaluation seeds against the run's base arm (paired, as notebook 07).

Usage:
    .venv/bin/python scripts/dataset_guidance.py runs/effect-pixart-web --guidance 1.0
Writes runs/<run>/dataset_g<guidance>/, finetune/qk_g<guidance>/, tables/dataset_guidance_<guidance>.csv.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compseed_lib import dataset, evaluate, finetune, tuning  # noqa: E402
from compseed_lib.pipelines import load_pipeline  # noqa: E402
from compseed_lib.store import Run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a finished effect run, e.g. runs/effect-pixart-web")
    ap.add_argument("--guidance", type=float, default=1.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = Run.open(args.run)
    cfg = run.config()
    fit = dataset.fit_prompts(cfg)
    jobs = dataset.dataset_jobs(fit, run.load_table("top_seeds"), cfg.dataset.per_prompt)
    name = f"g{args.guidance:g}"
    build_cfg = dataclasses.replace(cfg, generate=dataclasses.replace(cfg.generate, guidance=args.guidance))
    pipe, info = load_pipeline(cfg.model)
    table = dataset.build_dataset(run, pipe, info, fit, jobs, build_cfg, stage=f"dataset_{name}")
    print(dataset.summary(table).to_string(index=False))
    folder = dataset.export_imagefolder(run, table, run.root / f"dataset_{name}")
    ft = dataclasses.replace(tuning.chosen_finetune(run, cfg), method="qk")
    target = run.root / "finetune" / f"qk_{name}" / "model"
    finetune.trained(run, cfg.model.pipeline, folder, ft, target, f"eval_qk_{name}", device=cfg.model.device)
    out = evaluate.against_base(run, cfg, str(target), f"qk_{name}")
    run.save_table(out, f"dataset_guidance_{name}")
    cols = ["arm", "level", "n", "accuracy", "relative_gain", "diff_lo", "diff_hi", "mcnemar_p"]
    print(out[out["level"].isin(["count", "spatial"])][[c for c in cols if c in out]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
