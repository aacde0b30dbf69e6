"""T2I-CompBench-style 2D spatial score (Karine-Huang/T2I-CompBench, `UniDet_eval/2D_spatial_eval.py`).

Per image, from the judge's detections (kept above 0.5, the most confident of each class used):
objects 1 and 2 are the prompt's first and last object (A and B of "a A <relation> a B");
both found -> 0.25·s1 + 0.25·s2 + 0.5·pos; only one -> 0.25·s; none -> 0; a score below 0.5 becomes 0.
pos for "on the left of": dx = c2x - c1x > 0 and |dx| > |dy|, then 1 if IoU < 0.1 else 0.1/IoU
(else 0); "on the right of" mirrors it, "on the top of" / "on the bottom of" the same on y.
The metric is the mean over images (95% interval: prompts resampled).

Usage:
    position_score("on the left of", box1, box2)     # boxes (x0, y0, x1, y1)
    image_score(metadata_for(prompt), detections)    # 0 .. 1
    score(answers)
"""
from __future__ import annotations

import pandas as pd

from ..judge.detections import Detection

THRESHOLD = 0.5
IOU_THRESHOLD = 0.1
LOCALITY = {"left of": "on the left of", "right of": "on the right of", "above": "on the top of",
            "below": "on the bottom of"}


def iou(a, b) -> float:
    """Intersection over union of boxes (x0, y0, x1, y1)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def position_score(locality: str, box1, box2) -> float:
    """T2I-CompBench's soft relation score of box1 `locality` box2: 1, 0.1/IoU when they overlap, or 0."""
    if locality not in LOCALITY.values():
        raise ValueError(f"unknown locality {locality!r}: use one of {sorted(LOCALITY.values())}")
    dx = (box2[0] + box2[2]) / 2 - (box1[0] + box1[2]) / 2
    dy = (box2[1] + box2[3]) / 2 - (box1[1] + box1[3]) / 2
    along, across = (dx, dy) if locality in ("on the left of", "on the right of") else (dy, dx)
    sign_ok = along > 0 if locality in ("on the left of", "on the top of") else along < 0
    if not sign_ok or abs(along) <= abs(across):
        return 0.0
    o = iou(box1, box2)
    return 1.0 if o < IOU_THRESHOLD else IOU_THRESHOLD / o


def image_score(md: dict, detections: list[Detection]) -> float:
    """One image's spatial score for position metadata (GenEval form: include[1] is A, include[0] is B)."""
    if md.get("tag") != "position":
        raise ValueError(f"T2I-CompBench spatial scores position prompts, got tag {md.get('tag')!r}")
    b_req, a_req = md["include"][0], md["include"][1]
    best = {}
    for d in sorted(detections, key=lambda d: -d.score):
        if d.score >= THRESHOLD:
            best.setdefault(d.cls, d)
    d1, d2 = best.get(a_req["class"]), best.get(b_req["class"])
    if d1 is not None and d2 is not None:
        s = 0.25 * d1.score + 0.25 * d2.score + 0.5 * position_score(LOCALITY[a_req["position"][0]], d1.box, d2.box)
    elif d1 is not None or d2 is not None:
        s = 0.25 * (d1 or d2).score
    else:
        s = 0.0
    return s if s >= 0.5 else 0.0


def score(answers: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The spatial score over the position prompts of `answers` (empty when there are none)."""
    from .metrics import metric_row, per_prompt

    df = answers[[md.get("tag") == "position" for md in answers["metadata"]]]
    if df.empty:
        return pd.DataFrame()
    df = df.assign(s=[image_score(md, d) for md, d in zip(df["metadata"], df["detections"])])
    pp = per_prompt(df, s="sum", images="size")
    return pd.DataFrame([metric_row("t2i-compbench/spatial", pp["s"], pp["images"], None, n_boot, seed,
                                    n_images=pp["images"].sum())])
