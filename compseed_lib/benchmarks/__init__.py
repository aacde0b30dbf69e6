"""The field's benchmarks on the kit's prompts: GenEval-style counting/position, T2I-CompBench-style 2D
spatial score, VISOR (OA, VISOR_uncond, VISOR_cond, VISOR_1..4), each with a 95% interval.

Inputs: images with their prompts, and a judge that answers the detection question
(`judge.templates.detect_question`) with boxes: the exact mini-world judge ("miniworld-exact") on the mini
world, the offline OpenCV detector ("coco-detector", `judge/backends/detector.py`) on real images.
Outputs: the answers table (`answers.ask_detections` / `answers.stage_answers`: one row per image with
the detections) and `score_all(answers)`: a DataFrame metric, value, lo, hi, n_prompts, n_images.
How each benchmark scores: `geneval.py`, `compbench.py`, `visor.py` (each module's docstring cites its source).

Usage:
    from compseed_lib import benchmarks
    benchmarks.geneval.write_metadata(prompts, "geneval_metadata.jsonl")
    answers = benchmarks.ask_detections([(prompt, seed, image), ...], cfg.judge)
    table = benchmarks.score_all(answers)
"""
from __future__ import annotations

import pandas as pd

from . import compbench, geneval, visor
from .answers import ask_detections, from_raw, stage_answers

__all__ = ["ask_detections", "compbench", "from_raw", "geneval", "score_all", "stage_answers", "visor"]


def score_all(answers: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Every benchmark metric the answers allow: GenEval tasks and overall, T2I-CompBench spatial, VISOR."""
    need = {"prompt_id", "seed", "metadata", "detections"}
    if not need <= set(answers.columns):
        raise ValueError(f"answers table lacks columns {sorted(need - set(answers.columns))} "
                         f"(build it with benchmarks.ask_detections or benchmarks.from_raw)")
    parts = [m.score(answers, n_boot, seed) for m in (geneval, compbench, visor)]
    return pd.concat([p for p in parts if not p.empty], ignore_index=True)
