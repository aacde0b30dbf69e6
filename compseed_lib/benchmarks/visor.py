"""VISOR (Gokhale et al., "Benchmarking Spatial Relationships in Text-to-Image Generation").

Per image of "a A <relation> a B": both objects found (above THRESHOLD) gives object accuracy (OA); the
relation is read from the centroids of the most confident box of each (left: cx_A < cx_B, right: >,
above: cy_A < cy_B, below: >; y grows downwards). Metrics:
  OA           share of images with both objects;
  VISOR_uncond share of images with both objects and the right relation;
  VISOR_cond   VISOR_uncond / OA (the relation's accuracy where both objects were drawn);
  VISOR_k      share of prompts with at least k of 4 images right (k = 1..4). With more than 4 images a
               prompt, its images (ordered by seed) are cut into consecutive blocks of 4 and the blocks
               averaged (left-over images are not used); a prompt with fewer than 4 has no VISOR_k.
Every metric with a 95% interval resampling prompts.

Usage:
    image_verdict(metadata_for(prompt), detections)   # (both_found, relation_right)
    score(answers)
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..judge.detections import Detection

THRESHOLD = 0.3
IMAGES_PER_PROMPT = 4


def image_verdict(md: dict, detections: list[Detection]) -> tuple[bool, bool]:
    """(both objects found, both found and the relation right) for position metadata."""
    if md.get("tag") != "position":
        raise ValueError(f"VISOR scores position prompts, got tag {md.get('tag')!r}")
    b_cls, a_req = md["include"][0]["class"], md["include"][1]
    best = {}
    for d in sorted(detections, key=lambda d: -d.score):
        if d.score > THRESHOLD:
            best.setdefault(d.cls, d)
    a, b = best.get(a_req["class"]), best.get(b_cls)
    if a is None or b is None:
        return False, False
    (ax, ay), (bx, by) = a.center, b.center
    right = {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[a_req["position"][0]]
    return True, bool(right)


def _blocks(correct: np.ndarray, k_max: int = IMAGES_PER_PROMPT) -> np.ndarray:
    """Per block of 4 images: number right; shape (n_blocks,)."""
    n = len(correct) // k_max
    return correct[: n * k_max].reshape(n, k_max).sum(axis=1)


def score(answers: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """OA, VISOR_uncond, VISOR_cond and VISOR_1..4 over the position prompts of `answers`."""
    from .metrics import metric_row

    df = answers[[md.get("tag") == "position" for md in answers["metadata"]]]
    if df.empty:
        return pd.DataFrame()
    verdicts = [image_verdict(md, d) for md, d in zip(df["metadata"], df["detections"])]
    df = df.assign(found=[v[0] for v in verdicts], right=[v[1] for v in verdicts]).sort_values(["prompt_id", "seed"])
    g = df.groupby("prompt_id", sort=True)
    found, right, images = g["found"].sum(), g["right"].sum(), g.size()
    n_img = int(images.sum())
    rows = [metric_row("visor/OA", found, images, None, n_boot, seed, n_images=n_img),
            metric_row("visor/uncond", right, images, None, n_boot, seed, n_images=n_img),
            metric_row("visor/cond", right, found, None, n_boot, seed, n_images=int(found.sum()))]
    blocks = {pid: _blocks(grp["right"].to_numpy(bool)) for pid, grp in g}
    blocks = {pid: b for pid, b in blocks.items() if len(b)}
    if blocks:
        nb = np.array([len(b) for b in blocks.values()], float)
        for k in range(1, IMAGES_PER_PROMPT + 1):
            hits = np.array([(b >= k).sum() for b in blocks.values()], float)
            rows.append(metric_row(f"visor/VISOR_{k}", hits, nb, None, n_boot, seed,
                                   n_images=int(nb.sum()) * IMAGES_PER_PROMPT))
    return pd.DataFrame(rows)
