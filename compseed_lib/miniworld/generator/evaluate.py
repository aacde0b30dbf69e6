"""How well the mini-world generator follows prompts, judged exactly (the model card's table).

Inputs: a pipeline folder (models/miniworld), seeds, sampler settings.
Outputs: a dict of DataFrames over `eval_prompts()` (8 objects x counts 2-6, 10 object pairs x 4
relations) under held-out seeds —
  counting   per asked count: kind present, background right, count exact (counts 2..6)
  histogram  judged count per asked count
  spatial    per relation: both objects present, relation right given both present, and accuracy
             (both present and the relation right: what the chain's judge scores)
  sensitivity  same-seed pixel distance "A left B" vs "A right B" against different-seed distance
  text_separation  (main only) text-encoder distance between captions that differ in one word
and `summary`, the issue's acceptance numbers in one row.

The images are made by the kit's generation engine into a run directory and judged by the judge
stage (the same code path as `compseed run`), so the card's numbers come from what users run.

Usage:
    compseed evaluate-model models/miniworld --seeds 64 --out reports/miniworld_eval
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ... import prompts as P
from ...config import GenerateConfig, JudgeConfig, ModelConfig
from ...generate import generate, make_jobs
from ...judge import judge_stage
from ...pipelines import encode_text, load_pipeline
from ...store import Run, sha256_file
from ..judge import judge_scene
from .data import objects_and_backgrounds

log = logging.getLogger(__name__)
EVAL_SEED_OFFSET = 10_000  # held-out seeds: training never used these noises for evaluation
VALIDATION_SEED_OFFSET = 20_000  # seeds for choosing among checkpoints


def eval_prompts(counts: tuple[int, ...] = (2, 3, 4, 5, 6), pairs_per_split: int = 5):
    """Every object (both splits) at every count, backgrounds cycled; and the first `pairs_per_split`
    object pairs of each split under all four relations (so every 'A left B' has its 'A right B')."""
    count_ps, spatial_ps = [], []
    for split in P.SPLITS:
        ps = P.numerical_prompts("miniworld", split, counts)
        bgs = list(dict.fromkeys(p.background for p in ps))
        objs = list(dict.fromkeys(p.obj.name for p in ps))
        count_ps += [p for p in ps if p.background == bgs[(objs.index(p.obj.name) + p.count) % len(bgs)]]
        sp = P.spatial_prompts("miniworld", split)
        pairs = list(dict.fromkeys((p.obj.name, p.obj_b.name) for p in sp))[:pairs_per_split]
        spatial_ps += [p for p in sp if (p.obj.name, p.obj_b.name) in pairs]
    return count_ps, spatial_ps


def default_run_dir(model: str | Path) -> Path:
    """`runs/_eval/<model folder>-<12 hex of its denoiser weights' sha256>`: a retrained model never
    resumes another's images."""
    folder = Path(model)
    weights = sorted((folder / "unet").glob("*.safetensors")) + sorted((folder / "transformer").glob("*.safetensors"))
    digest = sha256_file(weights[0])[:12] if weights else "unknown"
    return Path("runs") / "_eval" / f"{folder.name}-{digest}"


def evaluate(model: str | Path, n_seeds: int = 64, steps: int = 20, guidance: float = 4.0, size: int = 32,
             counts: tuple[int, ...] = (2, 3, 4, 5, 6), batch: int = 64, seed_offset: int = EVAL_SEED_OFFSET,
             run_dir: str | Path | None = None, device: str = "auto") -> dict[str, pd.DataFrame]:
    """Generate the evaluation prompts (`eval_prompts`) under held-out seeds and judge them exactly, on
    the code path users run: the generation engine (per-seed noise, ledger, resume) into a run
    directory, the judge stage through the OpenAI protocol for each prompt's question (count / relation),
    and the world's exact judge on the same stored images for what no question asks (object present,
    background). Choosing among checkpoints uses other seeds (VALIDATION_SEED_OFFSET), so the card's
    numbers are measured on seeds nothing was selected on."""
    pipe, info = load_pipeline(ModelConfig(pipeline=str(model), device=device))
    run = Run(run_dir or default_run_dir(model))
    seeds = list(range(seed_offset, seed_offset + n_seeds))
    count_ps, spatial_ps = eval_prompts(counts)
    ps = count_ps + spatial_ps
    stage = f"eval_{steps}steps_cfg{guidance:g}"
    gen = GenerateConfig(seeds=seeds, steps=steps, guidance=guidance, height=size, width=size, batch_size=batch)
    images = generate(run, stage, pipe, info, make_jobs(ps, seeds), gen)
    answers = judge_stage(run, stage, ps, JudgeConfig())
    answer = {(r.prompt_id, int(r.seed)): r for r in answers.itertuples()}
    by_id = {p.id: p for p in ps}
    rows, by_key = [], {}
    for r in tqdm(list(images.itertuples()), desc="read back", unit="img", leave=False):
        p, seed = by_id.get(r.prompt_id), int(r.seed)
        if p is None or seed not in seeds:
            continue
        img = np.asarray(run.read_image(r))
        j = judge_scene(img)  # presence and background: the world's own exact measures
        by_key[(p.text, seed)] = img
        a = answer[(p.id, seed)]
        row = dict(prompt=p.text, kind=p.kind, category=p.category, seed=seed, obj=p.obj.name,
                   present=j.counts.get(p.obj.name, 0) > 0, judged_background=j.background)
        if p.kind == "count":
            judged = int(a.parsed_answer) if isinstance(a.parsed_answer, str) else -1
            row.update(asked=p.count, judged=judged, background=p.background,
                       background_ok=j.background == p.background, correct=judged == p.count)
        else:
            both = row["present"] and j.counts.get(p.obj_b.name, 0) > 0
            holds = (a.parsed_answer == "yes") if both else None  # the judge's verdict, given both drawn
            row.update(obj_b=p.obj_b.name, relation=p.relation, both_present=both, correct=holds)
        rows.append(row)
    order = {(p.text, s): i for i, (p, s) in enumerate((p, s) for p in ps for s in seeds)}
    rows.sort(key=lambda row: order[(row["prompt"], row["seed"])])  # job order, as the tables always had
    df = pd.DataFrame(rows)
    cnt, spa = df[df.kind == "count"].astype({"asked": int, "judged": int}), df[df.kind == "spatial"]
    counting = cnt.groupby("asked").agg(images=("correct", "size"), kind_present=("present", "mean"),
                                        background_ok=("background_ok", "mean"),
                                        count_exact=("correct", "mean")).reset_index()
    histogram = pd.crosstab(cnt["asked"], cnt["judged"].clip(upper=9))
    spa = spa.assign(accurate=spa["correct"].eq(True))  # both objects drawn and the relation right
    spatial = spa.groupby("relation").agg(images=("prompt", "size"), both_present=("both_present", "mean"),
                                          correct_given_both=("correct", lambda c: c.dropna().mean()),
                                          accuracy=("accurate", "mean")).reset_index()
    sens = relation_sensitivity(by_key, spatial_ps, seeds)
    in_range = cnt[cnt.asked.between(2, 5)]
    summary = pd.DataFrame([{
        "seeds": n_seeds, "seed_offset": seed_offset, "steps": steps, "guidance": guidance,
        "kind_present": df["present"].mean(), "background_ok": cnt["background_ok"].mean(),
        "count_2_5_exact": in_range["correct"].mean(),
        "relation_correct_given_both": spa["correct"].dropna().astype(float).mean(),
        "both_present": spa["both_present"].mean(), "spatial_accuracy": spa["accurate"].mean(),
        "left_right_same_seed_dist": sens["same_seed"], "different_seed_dist": sens["different_seed"],
        "sensitivity_ratio": sens["same_seed"] / max(sens["different_seed"], 1e-9)}])
    return {"summary": summary, "counting": counting, "histogram": histogram.reset_index(),
            "spatial": spatial, "images": df}


def relation_sensitivity(by_key: dict, spatial_ps: list, seeds: list[int]) -> dict[str, float]:
    """Mean |pixel| distance between "A left B" and "A right B" at one seed vs one prompt at two seeds."""
    texts = {p.text for p in spatial_ps}
    same, diff = [], []
    for p in spatial_ps:
        if p.relation != "left":
            continue
        twin = f"{p.obj.singular} {P.RELATION_TEXT['right']} {p.obj_b.singular}"
        if twin not in texts:
            continue
        for a, b in zip(seeds, seeds[1:]):
            x, y = by_key[(p.text, a)].astype(float), by_key[(twin, a)].astype(float)
            same.append(np.abs(x - y).mean())
            diff.append(np.abs(x - by_key[(p.text, b)].astype(float)).mean())
    return {"same_seed": float(np.mean(same)) if same else float("nan"),
            "different_seed": float(np.mean(diff)) if diff else float("nan")}


def text_separation(pipe) -> pd.DataFrame:
    """How far apart the text encoder keeps captions that differ in one word (mean L2 distance of the
    hidden states the denoiser attends to, over token positions), per word class. A class near zero is
    a word the generator cannot see: stage 1 of the shipped model had relation words at ~0.3."""
    objs, bgs = objects_and_backgrounds()
    rel = P.RELATION_TEXT
    pairs: dict[str, list[tuple[str, str]]] = {k: [] for k in ("left vs right", "left vs above", "above vs below",
                                                              "first object", "count", "background")}
    for i, a in enumerate(objs):
        b, c = objs[(i + 1) % len(objs)], objs[(i + 2) % len(objs)]
        sent = lambda x, r, y: f"{x.singular} {rel[r]} {y.singular}"  # noqa: E731
        pairs["left vs right"].append((sent(a, "left", b), sent(a, "right", b)))
        pairs["left vs above"].append((sent(a, "left", b), sent(a, "above", b)))
        pairs["above vs below"].append((sent(a, "above", b), sent(a, "below", b)))
        pairs["first object"].append((sent(a, "left", b), sent(c, "left", b)))
        pairs["count"].append((P.numerical_text(a, 3, bgs[0]), P.numerical_text(a, 4, bgs[0])))
        pairs["background"].append((P.numerical_text(a, 3, bgs[i % len(bgs)]),
                                    P.numerical_text(a, 3, bgs[(i + 1) % len(bgs)])))
    rows = []
    with torch.inference_mode():
        for name, ps in pairs.items():
            texts = [t for pair in ps for t in pair]
            h = encode_text(pipe, texts, pipe.device)[0].float()
            d = (h[0::2] - h[1::2]).norm(dim=-1).mean(dim=1)
            rows.append({"differs_in": name, "pairs": len(ps), "distance": float(d.mean()),
                         "state_norm": float(h.norm(dim=-1).mean())})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    """CLI: evaluate a pipeline folder and write the tables as CSV/JSON."""

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="pipeline folder, e.g. models/miniworld")
    ap.add_argument("--seeds", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed-offset", type=int, default=EVAL_SEED_OFFSET,
                    help=f"first seed; {VALIDATION_SEED_OFFSET} for choosing among checkpoints")
    ap.add_argument("--out", default=None, help="folder for the tables")
    ap.add_argument("--run", default=None, help="run directory for the images and ledger (default: "
                                                "runs/_eval/<model>-<weights hash>; resumable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from ...runtime import set_torch_threads

    set_torch_threads(args.threads)  # the CLI decides process-wide settings
    res = evaluate(args.model, args.seeds, args.steps, args.guidance, seed_offset=args.seed_offset,
                   run_dir=args.run)
    pipe, _ = load_pipeline(ModelConfig(pipeline=args.model, device="cpu"))
    res["text_separation"] = text_separation(pipe)
    print(res["text_separation"].to_string(index=False))
    print(res["summary"].T.to_string())
    print(res["counting"].to_string(index=False))
    print(res["spatial"].to_string(index=False))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, table in res.items():
            table.to_csv(out / f"{name}.csv", index=False)
        (out / "summary.json").write_text(json.dumps(res["summary"].iloc[0].to_dict(), indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
