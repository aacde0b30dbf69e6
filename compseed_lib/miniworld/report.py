"""Accuracy study of the mini-world judge against the renderer's exact ground truth.

Inputs: number of renders per question type, image size, seed, corruption names.
Outputs: a DataFrame with one row per (question, corruption): n, accuracy and a 95% Wilson interval;
`main()` also writes it as a markdown table.

Usage:
    from compseed_lib.miniworld.report import judge_accuracy
    df = judge_accuracy(n=500, size=32)
    python -m compseed_lib.miniworld.report --n 2000 --out reports/judge_accuracy.md

Questions (fresh renders each, all 8 kinds and 6 backgrounds drawn uniformly):
  count              exact count of one kind, counts 1..6
  relation           `a <rel> b` asked as rendered -> correct when True
  relation_negative  the opposite relation asked on the same image -> correct when False
  background         background phrase of a scene with 0..6 random objects
Every corruption is applied to the same renders (paired): gaussian blur (sigma 0.5, 1.0 px at the
render size; 1.5 as a stress level), gaussian noise (std 8, 16 on the 0-255 scale; 24 as stress),
colour drift (one uniform shift per image and channel in +-20, +-40).
"""
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from ..stats import wilson_interval
from .judge import background_of, decide_relation, judge_scene
from .render import render_count, render_relation, render_scene
from .vocab import BACKGROUNDS, KINDS, OPPOSITE, RELATIONS

log = logging.getLogger(__name__)
Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _blur(sigma: float) -> Corruption:
    return lambda x, rng: ndimage.gaussian_filter(x.astype(np.float32), sigma=(0, sigma, sigma, 0),
                                                  mode="nearest")


def _noise(std: float) -> Corruption:
    return lambda x, rng: x + rng.normal(0.0, std, size=x.shape).astype(np.float32)


def _drift(amp: float) -> Corruption:
    return lambda x, rng: x + rng.uniform(-amp, amp, size=(x.shape[0], 1, 1, 3)).astype(np.float32)


CORRUPTIONS: dict[str, Corruption] = {
    "clean": lambda x, rng: x.astype(np.float32),
    "blur0.5": _blur(0.5), "blur1.0": _blur(1.0), "blur1.5": _blur(1.5),
    "noise8": _noise(8.0), "noise16": _noise(16.0), "noise24": _noise(24.0),
    "drift20": _drift(20.0), "drift40": _drift(40.0),
}


def corrupt(images: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
    """Apply corruption `name` to a uint8 batch (N, H, W, 3); returns uint8."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid: {list(CORRUPTIONS)}")
    out = CORRUPTIONS[name](images, np.random.default_rng([seed, list(CORRUPTIONS).index(name)]))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _renders(question: str, n: int, size: int, seed: int) -> tuple[np.ndarray, list[tuple]]:
    """n images (uint8 batch) for one question type, with their ground truth."""
    rng = np.random.default_rng([seed, ["count", "relation", "background"].index(question)])
    kinds, bgs = list(KINDS), list(BACKGROUNDS)
    images, truth = [], []
    for _ in range(n):
        bg = bgs[rng.integers(len(bgs))]
        s = int(rng.integers(2**31))
        if question == "count":
            kind, count = kinds[rng.integers(len(kinds))], int(rng.integers(1, 7))
            scene = render_count(kind, count, bg, seed=s, size=size)
            truth.append((kind, count))
        elif question == "relation":
            ia, ib = rng.choice(len(kinds), size=2, replace=False)
            rel = RELATIONS[rng.integers(len(RELATIONS))]
            scene = render_relation(kinds[ia], rel, kinds[ib], bg, seed=s, size=size)
            truth.append((kinds[ia], rel, kinds[ib]))
        else:
            objs = [kinds[i] for i in rng.integers(len(kinds), size=int(rng.integers(0, 7)))]
            scene = render_scene(objs, bg, seed=s, size=size)
            truth.append((bg,))
        images.append(np.asarray(scene.image))
    return np.stack(images), truth


def _score(question: str, images: np.ndarray, truth: list[tuple]) -> dict[str, np.ndarray]:
    """Correctness per image for each reported question derived from this question type."""
    if question == "background":
        return {"background": np.array([background_of(im) == t[0]
                                         for im, t in zip(images, truth, strict=True)])}
    pairs = list(zip((judge_scene(im) for im in images), truth, strict=True))
    if question == "count":
        return {"count": np.array([j.counts[k] == c for j, (k, c) in pairs])}
    pos = np.array([decide_relation(j, a, r, b) is True for j, (a, r, b) in pairs])
    neg = np.array([decide_relation(j, a, OPPOSITE[r], b) is False for j, (a, r, b) in pairs])
    return {"relation": pos, "relation_negative": neg}


def judge_accuracy(n: int = 2000, size: int = 32, seed: int = 0,
                   corruptions: list[str] | None = None) -> pd.DataFrame:
    """Judge accuracy per question and corruption on n fresh renders per question type ('clean' always)."""
    names = list(CORRUPTIONS) if corruptions is None else ["clean"] + [c for c in corruptions if c != "clean"]
    for c in names:
        if c not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {c!r}; valid: {list(CORRUPTIONS)}")
    rows = []
    for question in ("count", "relation", "background"):
        t0 = time.perf_counter()
        images, truth = _renders(question, n, size, seed)
        log.info("rendered %d %s scenes in %.1fs", n, question, time.perf_counter() - t0)
        for c in names:
            for q, ok in _score(question, corrupt(images, c, seed), truth).items():
                lo, hi = wilson_interval(int(ok.sum()), len(ok))
                rows.append(dict(question=q, corruption=c, n=len(ok), accuracy=float(ok.mean()),
                                 ci_low=lo, ci_high=hi))
        log.info("judged %s under %d conditions in %.1fs", question, len(names), time.perf_counter() - t0)
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame, command: str = "") -> str:
    """Accuracy table (questions x corruptions, percent) as markdown."""
    table = df.pivot(index="question", columns="corruption", values="accuracy")
    table = table.loc[list(dict.fromkeys(df["question"])), list(dict.fromkeys(df["corruption"]))]
    head = "| question | n | " + " | ".join(table.columns) + " |"
    sep = "|---|---:|" + "---:|" * len(table.columns)
    n_of = df.groupby("question")["n"].first()
    lines = [f"| {q} | {n_of[q]} | " + " | ".join(f"{100 * v:.2f}" for v in table.loc[q]) + " |"
             for q in table.index]
    text = ["# Mini-world judge accuracy (%)", ""]
    if command:
        text += [f"Command: `{command}`", ""]
    text += [head, sep, *lines, "",
             "Corruptions: blurS = gaussian blur sigma S px; noiseS = gaussian noise std S (0-255); "
             "driftA = per-image, per-channel colour shift uniform in +-A.", ""]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    """CLI: run the study and write the markdown table."""
    ap = argparse.ArgumentParser(prog="compseed judge-accuracy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="renders per question type")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corruptions", default=None, help=f"comma list from {list(CORRUPTIONS)} (default: all)")
    ap.add_argument("--out", default="reports/judge_accuracy.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    corr = args.corruptions.split(",") if args.corruptions else None
    t0 = time.perf_counter()
    df = judge_accuracy(args.n, args.size, args.seed, corr)
    cmd = f"python -m compseed_lib.miniworld.report --n {args.n} --size {args.size} --seed {args.seed}"
    cmd += f" --corruptions {args.corruptions}" if args.corruptions else ""
    md = to_markdown(df, cmd)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md, encoding="utf-8")
    log.info("%s\nwrote %s in %.1fs", md, out, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
