"""One point of the scaling curve: `generate_distributed` of N mini-world images under `accelerate launch`.

Inputs: --run (a fresh run folder), --images N, --steps, --batch, --model; launched as
    accelerate launch --cpu --num_processes P bench/scale_generate.py --run R --images N --out t.json
Output: t.json {"seconds": generation time from the first barrier to the merged ledger, "images": N,
"processes": P} written by the main process (model loading is left out). `compseed bench` calls this.
"""
import argparse
import json
import time

from accelerate import PartialState

from compseed_lib import generate as G
from compseed_lib import prompts
from compseed_lib.config import GenerateConfig, ModelConfig
from compseed_lib.pipelines import load_pipeline
from compseed_lib.store import Run

p = argparse.ArgumentParser()
p.add_argument("--run", required=True)
p.add_argument("--images", type=int, required=True)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--model", default="miniworld")
p.add_argument("--out", required=True)
args = p.parse_args()
state = PartialState()
pipe, info = load_pipeline(ModelConfig(pipeline=args.model, device="cpu"))
seeds = list(range(32))
jobs = G.make_jobs(prompts.load("miniworld", "train"), seeds)[:args.images]
if len(jobs) < args.images:
    raise SystemExit(f"--images {args.images}: the mini world's train prompts x 32 seeds give {len(jobs)}")
state.wait_for_everyone()
start = time.perf_counter()
df = G.generate_distributed(Run(args.run), "scale", pipe, info, jobs,
                            GenerateConfig(steps=args.steps, guidance=4.0, batch_size=args.batch), progress=False)
seconds = time.perf_counter() - start
if state.is_main_process:
    assert len(df) == args.images, f"{len(df)} rows for {args.images} images"
    with open(args.out, "w") as f:
        json.dump({"seconds": seconds, "images": args.images, "processes": state.num_processes}, f)
