"""A rehearsal of the real tier: the paper's configs, unchanged but for the model and the scale, run the
whole chain 00 -> 08 through the CLI.

Without the weights and the judges, each paper config runs with:
- the model swapped for a tiny random pipeline of its model's shape (`tiny-sd21`: SD 2.1's factor-8
  VAE, four UNet levels, v-prediction, at the config's 768 px; `tiny-pixart512`: PixArt-alpha 512's
  patch-2 transformer over 64x64 latents, at 512 px);
- both judges by their registry names (the mining judge `vllm-qwen2-vl`, the evaluation judge
  `gpt-4o` with OPENAI_API_KEY in the environment) pointed at one loopback server that answers under
  those model ids in a general VLM's prose (`rehearsal-vlm`: counts in sentences, "No, the dog is not
  to the left of the cat.", "Definitely not.");
- what this machine lacks: no CUDA generator (`model.generator_device=cpu`);
- a handful of prompts and seeds, two steps each of sampling and fine-tuning; the datasets from the mining
  prompts only (the configs build them over Comp90's whole training cross product, 2,713 prompts at full
  size: tests/test_effect.py runs that design on the mini world), and every arm but top_seeds (it needs mined
  seeds for every held-out count and relation, more than 2 prompts per kind can give; the smoke chain runs it).
Everything else — Comp90, the image size, float16, fp16 mixed precision, the q/k selection, EMA, the
other evaluation arms — is the config's own. A hard-coded size, a mini-world-only question or a step that
assumes the exact judge fails here.
"""
from __future__ import annotations

import json

import pandas as pd
from conftest import cli
from PIL import Image

from compseed_lib.chain import CHAIN
from compseed_lib.judge.registry import JUDGES, start_local_server
from compseed_lib.store import Run

KEY = "sk-rehearsal-0c0ffee-not-a-key"
SMALL = ["prompts.limit=2", "dataset.prompts=mining",
         "evaluate.arms=[base, qk, lora, qk_random_seeds, qk_unrectified]",
         "generate.seeds=[0, 1]", "evaluate.seeds=[1000]", "generate.steps=2", "finetune.steps=2",
         "finetune.grad_accum=1", "finetune.batch=2", "finetune.checkpoint_every=1"]
REHEARSALS = {"paper-sd21": ("tiny-sd21", 768), "paper-pixart": ("tiny-pixart512", 512)}


def rehearse(name: str, tmp_path) -> None:
    """Run paper config `name` 00 -> 08 as the module doc says, and check what it made."""
    model, size = REHEARSALS[name]
    served = ",".join(f"{JUDGES[j].model}=rehearsal-vlm" for j in ("gpt-4o", "vllm-qwen2-vl"))
    with start_local_server(args=["--models", served]) as url:
        sets = [f"runs_dir={tmp_path / 'runs'}", f"model.pipeline={model}", "model.generator_device=cpu",
                f"judge.base_url={url}", f"evaluate.judge_base_url={url}", *SMALL]
        res = cli("run", f"configs/{name}.yaml", *[a for s in sets for a in ("--set", s)],
                  "--reports", str(tmp_path / "reports"), env={"OPENAI_API_KEY": KEY}, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    report = tmp_path / "reports" / name
    for step in CHAIN[:-1]:  # 00 -> 08 (09 needs a `methods` section, which the paper configs have not)
        nb = json.loads((report / f"{step}.ipynb").read_text())
        errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, (step, errors)
    run = Run.open(tmp_path / "runs" / name)
    cfg = run.config()
    assert cfg.prompts.world == "comp90" and cfg.finetune.mixed_precision == "fp16" and cfg.model.dtype == "float16"
    images = run.ledger.images()
    assert len(images) and set(images.height) == {size} and set(images.width) == {size}
    assert Image.open(run.root / images.path.iloc[0]).size == (size, size)
    judged = run.ledger.judgements()
    assert set(judged.judge_model) == {JUDGES["vllm-qwen2-vl"].model, JUDGES["gpt-4o"].model}
    prose = judged.raw_answer.str.contains(" ", na=False)
    assert prose.mean() > 0.3  # sentences, not bare numbers: the reader met a VLM's prose
    assert judged.parsed_answer.notna().mean() > 0.9, judged[judged.parsed_answer.isna()].raw_answer.tolist()
    evaluation = pd.read_csv(run.root / "tables" / "evaluation.csv")
    assert set(cfg.evaluate.arms) <= set(evaluation.arm)
    leaked = [str(p) for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert not leaked and KEY not in res.stderr
