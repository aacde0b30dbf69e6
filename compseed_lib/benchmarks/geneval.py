"""GenEval-style prompt metadata and scoring (djghosh13/geneval, `evaluate_images.py` / `summary_scores.py`).

Metadata: one JSON object a line, as GenEval writes it:
  {"tag": "counting", "include": [{"class": "ball", "count": 3}], "exclude": [{"class": "ball", "count": 4}],
   "prompt": "three balls, on the sand"}
  {"tag": "position", "include": [{"class": "star", "count": 1},
                                  {"class": "ball", "count": 1, "position": ["left of", 0]}],
   "prompt": "a ball on the left of a star"}
Scoring, GenEval's rules on a judge's detections (`judge.detections`): per class keep detections above
0.3 (0.9 for counting prompts), most confident first, at most 16, no NMS; an include {class, count}
needs at least `count` of them, an exclude {class, count} fewer than `count`; a position include checks
each of its `count` most confident objects against every object matched by include number `i` with
`relative_position` (centres offset, each axis shrunk by 0.1 x the summed box sizes, then divided by the
offset's norm: x < -0.5 left of, > 0.5 right of, y < -0.5 above, > 0.5 below). Image correct iff all
clauses hold; per-task accuracy; overall = mean over tasks.

Usage:
    write_metadata(prompts, "geneval_metadata.jsonl"); read_metadata("geneval_metadata.jsonl")
    image_correct(metadata_for(prompt), detections)        # True / False
    score(answers)   # DataFrame metric, value, lo, hi (95% bootstrap over prompts), n_prompts, n_images
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..judge.detections import Detection
from ..prompts import Prompt

THRESHOLD = 0.3
COUNTING_THRESHOLD = 0.9
MAX_OBJECTS = 16
POSITION_THRESHOLD = 0.1
RELATION_WORDS = {"left": "left of", "right": "right of", "above": "above", "below": "below"}
TAGS = {"count": "counting", "spatial": "position"}


def metadata_for(prompt: Prompt) -> dict:
    """GenEval metadata of a counting or spatial prompt (class names = the prompt's object names)."""
    if prompt.kind == "count":
        return {"tag": "counting", "include": [{"class": prompt.obj.name, "count": int(prompt.count)}],
                "exclude": [{"class": prompt.obj.name, "count": int(prompt.count) + 1}], "prompt": prompt.text}
    if prompt.kind == "spatial" and prompt.obj_b is not None and prompt.relation in RELATION_WORDS:
        return {"tag": "position", "include": [
            {"class": prompt.obj_b.name, "count": 1},
            {"class": prompt.obj.name, "count": 1, "position": [RELATION_WORDS[prompt.relation], 0]}],
            "prompt": prompt.text}
    raise ValueError(f"prompt {prompt.id} ({prompt.text!r}): GenEval metadata needs a counting prompt or a "
                     f"spatial prompt with a known relation")


def write_metadata(prompts: list[Prompt], path: str | Path) -> Path:
    """Write the prompts' GenEval metadata JSONL (one line per prompt, in order); returns the path."""
    from ..store import atomic_write_text

    lines = [json.dumps(metadata_for(p)) for p in prompts]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return Path(path)


def read_metadata(path: str | Path) -> list[dict]:
    """GenEval metadata lines; ValueError naming the file and line of a malformed one."""
    out = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            md = json.loads(line)
            check_metadata(md)
        except ValueError as e:
            raise ValueError(f"{path}:{i}: not GenEval metadata: {e}") from None
        out.append(md)
    return out


def check_metadata(md: dict) -> dict:
    """`md` if it has GenEval's fields (tag, prompt, include of {class, count[, position]}); ValueError."""
    if not isinstance(md, dict) or not isinstance(md.get("tag"), str) or not isinstance(md.get("prompt"), str):
        raise ValueError(f"needs string 'tag' and 'prompt': {md!r}")
    for key in ("include", "exclude"):
        for req in md.get(key, []):
            if not isinstance(req.get("class"), str) or not isinstance(req.get("count"), int):
                raise ValueError(f"{key} entries need 'class' (str) and 'count' (int): {req!r}")
            pos = req.get("position")
            if pos is not None and (len(pos) != 2 or pos[0] not in RELATION_WORDS.values()
                                    or not 0 <= int(pos[1]) < len(md["include"])):
                raise ValueError(f"position must be [relation, include index]: {pos!r}")
    return md


def relative_position(a: Detection, b: Detection) -> set[str]:
    """GenEval's relations of box a to box b: a subset of {'left of', 'right of', 'above', 'below'}."""
    offset = np.subtract(a.center, b.center)
    dims = np.add(np.abs(a.size), np.abs(b.size))
    revised = np.maximum(np.abs(offset) - POSITION_THRESHOLD * dims, 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    return {r for r, hit in (("left of", dx < -0.5), ("right of", dx > 0.5), ("above", dy < -0.5),
                             ("below", dy > 0.5)) if hit}


def kept(md: dict, detections: list[Detection]) -> dict[str, list[Detection]]:
    """Detections per class GenEval keeps: above the tag's threshold, most confident first, at most 16."""
    thr = COUNTING_THRESHOLD if md["tag"] == "counting" else THRESHOLD
    out: dict[str, list[Detection]] = {}
    for d in sorted(detections, key=lambda d: -d.score):
        if d.score > thr and len(out.setdefault(d.cls, [])) < MAX_OBJECTS:
            out[d.cls].append(d)
    return out


def image_correct(md: dict, detections: list[Detection]) -> bool:
    """Whether one image satisfies its metadata (includes AND, excludes OR), by GenEval's rules."""
    objects = kept(md, detections)
    matched: list[list[Detection] | None] = []
    correct = True
    for req in md.get("include", []):
        found = objects.get(req["class"], [])[:req["count"]]
        ok = len(found) >= req["count"]
        if ok and "position" in req:
            rel, target = req["position"]
            ok = matched[target] is not None and all(
                rel in relative_position(o, t) for o in found for t in matched[target])
        matched.append(found if ok else None)
        correct &= ok
    for req in md.get("exclude", []):
        if len(objects.get(req["class"], [])) >= req["count"]:
            correct = False
    return bool(correct)


def score(answers: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """GenEval per-task accuracy and overall (mean over tasks) with 95% intervals (prompts resampled
    within each task)."""
    from .metrics import metric_row, per_prompt

    df = answers.assign(correct=[image_correct(md, dets) for md, dets in zip(answers["metadata"],
                                                                                answers["detections"])])
    df["tag"] = [md["tag"] for md in df["metadata"]]
    pp = per_prompt(df, correct="sum", images="size", tag="first")
    rows = [metric_row(f"geneval/{tag}", g["correct"], g["images"], None, n_boot, seed, n_images=g["images"].sum())
            for tag, g in pp.groupby("tag", sort=True)]
    if rows:
        rows.append(metric_row("geneval/overall", pp["correct"], pp["images"], pp["tag"], n_boot, seed,
                               n_images=pp["images"].sum()))
    return pd.DataFrame(rows)
