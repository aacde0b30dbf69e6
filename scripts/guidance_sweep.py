"""Base vs InfSplign-style guidance at a few scales on the mini world's held-out spatial prompts, judged exactly.

Inputs: a generator (shipped name or folder), the scales, seeds, steps, CFG scale and guided window.
Outputs: a markdown table on stdout, one row per arm: spatial accuracy (relation right and both objects drawn,
over all images, Wilson 95% interval), relation accuracy given both drawn, both-objects-drawn rate, and
seconds per image; with --per-relation also each relation's accuracy.

Usage (one thread, a few minutes on a CPU):
    OMP_NUM_THREADS=1 python scripts/guidance_sweep.py --model miniworld --scales 0 300 1000 --seeds 8
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from compseed_lib import prompts as P
from compseed_lib.config import ModelConfig
from compseed_lib.methods.guidance import GuidanceConfig, generate_guided
from compseed_lib.miniworld.judge import decide_relation, judge_scene
from compseed_lib.pipelines import load_pipeline
from compseed_lib.stats import wilson_interval


def main(argv=None) -> pd.DataFrame:
    """Run the sweep and print its table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="miniworld")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.0, 300.0, 1000.0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--first-seed", type=int, default=10000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--end", type=int, default=None, help="first unguided step (default: half the steps)")
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--split", default="eval")
    ap.add_argument("--per-relation", action="store_true")
    args = ap.parse_args(argv)
    pipe, _ = load_pipeline(ModelConfig(pipeline=args.model))
    ps = P.spatial_prompts("miniworld", args.split)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    pairs = [(p, s) for p in ps for s in seeds]
    rows = []
    for scale in args.scales:
        cfg = GuidanceConfig(scale=scale, end=args.end, iterations=args.iterations)
        start = time.perf_counter()
        images = generate_guided(pipe, [p for p, _ in pairs], [s for _, s in pairs], cfg, steps=args.steps,
                                 guidance_scale=args.guidance, height=32, width=32)
        seconds = (time.perf_counter() - start) / len(images)
        for (p, s), img in zip(pairs, images, strict=True):
            j = judge_scene(img)
            verdict = decide_relation(j, p.obj.name, p.relation, p.obj_b.name)
            rows.append(dict(scale=scale, relation=p.relation, seed=s, both=verdict is not None,
                             correct=bool(verdict), s_per_image=seconds))
    df = pd.DataFrame(rows)
    keys = ["scale", "relation"] if args.per_relation else ["scale"]
    out = []
    for key, g in df.groupby(keys):
        k, n = int(g.correct.sum()), len(g)
        lo, hi = wilson_interval(k, n)
        both = g[g.both]
        out.append(dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True),
                        images=n, spatial_acc=f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]",
                        relation_acc_given_both=round(both.correct.mean(), 3) if len(both) else None,
                        both_drawn=round(g.both.mean(), 3), s_per_image=round(g.s_per_image.mean(), 2)))
    table = pd.DataFrame(out)
    print(f"model {args.model}, {len(ps)} {args.split} spatial prompts x {args.seeds} seeds from {args.first_seed}, "
          f"{args.steps} steps, CFG {args.guidance}, guided steps [0, {args.end or args.steps // 2}), "
          f"{args.iterations} update(s) per step")
    print("| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns))
    for r in table.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in r) + " |")
    return table


if __name__ == "__main__":
    main()
