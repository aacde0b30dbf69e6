"""The answers table the benchmark scorers read: one row per image, the judge's detections of the prompt's
classes, asked through the judge protocol (`judge.templates.detect_question`).

Columns: prompt_id, seed, prompt, kind, metadata (GenEval metadata dict), judge_model, raw_answer,
detections (list of `judge.detections.Detection`; an answer that is not detection JSON gives [] and is
counted in `bad_answer`). The same table scores GenEval, T2I-CompBench and VISOR, for the exact
mini-world judge ("miniworld-exact") and the offline detector ("coco-detector", "face-detector") alike.

Usage:
    answers = ask_detections([(prompt, seed, pil_image), ...], cfg.judge)       # via the judge server
    answers = stage_answers(run, "base", prompts, cfg.judge)                   # a run's generated images
    answers = from_raw(df)    # a saved table (prompt columns + raw_answer) parsed again
"""
from __future__ import annotations

import asyncio
import json
import logging

import pandas as pd

from ..config import JudgeConfig
from ..judge.client import JudgeClient, png_bytes, run_sync
from ..judge.detections import BadDetections, parse_detections
from ..judge.registry import open_endpoint
from ..judge.templates import detect_question
from ..prompts import Prompt
from .geneval import metadata_for

log = logging.getLogger(__name__)


def classes_of(md: dict) -> list[str]:
    """The class names a prompt's metadata asks about, in order."""
    return list(dict.fromkeys(r["class"] for r in md.get("include", []) + md.get("exclude", [])))


def from_raw(df: pd.DataFrame) -> pd.DataFrame:
    """Parse `raw_answer` into `detections` (and `metadata` from JSON text when stored as text)."""
    out = df.copy()
    if len(out) and isinstance(out["metadata"].iloc[0], str):
        out["metadata"] = [json.loads(m) for m in out["metadata"]]
    dets, bad = [], []
    for raw in out["raw_answer"]:
        try:
            dets.append(parse_detections(raw)[2])
            bad.append(False)
        except BadDetections as e:
            log.warning("answer is not a detection answer, scored as no objects: %s", e)
            dets.append([])
            bad.append(True)
    out["detections"], out["bad_answer"] = dets, bad
    return out


async def _ask_all(items: list[tuple[Prompt, int, bytes]], endpoint: tuple[str, str, str],
                   cfg: JudgeConfig) -> list[dict]:
    async with JudgeClient(*endpoint, cfg) as jc:
        await jc.check()

        async def one(p: Prompt, seed: int, png: bytes) -> dict:
            md = metadata_for(p)
            raw = await jc.ask(png, detect_question(classes_of(md)))
            return dict(prompt_id=p.id, seed=int(seed), prompt=p.text, kind=p.kind, metadata=md,
                        judge_model=endpoint[1], raw_answer=raw)

        return await asyncio.gather(*(one(p, s, png) for p, s, png in items))


def ask_detections(items, cfg: JudgeConfig | None = None) -> pd.DataFrame:
    """Ask the configured judge for the detections of each (prompt, seed, PIL image); the answers table."""
    cfg = cfg or JudgeConfig()
    items = [(p, int(s), png_bytes(img)) for p, s, img in items]
    if not items:
        raise ValueError("ask_detections got no images")
    with open_endpoint(cfg) as endpoint:
        rows = run_sync(_ask_all(items, endpoint, cfg))
    return from_raw(pd.DataFrame(rows))


def stage_answers(run, stage: str, prompts: list[Prompt], cfg: JudgeConfig | None = None) -> pd.DataFrame:
    """The answers table of a run's stage: every generated image of `prompts` (hash-checked) asked once."""
    by_id = {p.id: p for p in prompts}
    rows = run.ledger.images(stage)
    rows = rows[rows["prompt_id"].isin(by_id)]
    if rows.empty:
        raise ValueError(f"stage {stage!r} of run {run.root} has no images of the {len(prompts)} prompts given")
    items = [(by_id[r.prompt_id], int(r.seed), run.read_image(r)) for r in rows.itertuples(index=False)]
    return ask_detections(items, cfg).assign(stage=stage)
