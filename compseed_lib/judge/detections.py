"""The detection answer: every object of the asked classes with its box, as JSON text.

The answer to `templates.detect_question(...)`, written by a judge backend and read by the benchmark
scorers (`compseed_lib/benchmarks/`):
  {"width": 64, "height": 64, "objects": [{"class": "ball", "box": [x0, y0, x1, y1], "score": 1.0}, ...]}
Boxes are in pixels (x to the right, y down), objects most confident first (a judge with no scores,
like the exact mini-world judge, lists the largest first with score 1.0).

Usage:
    text = detections_answer(64, 64, [Detection("ball", (3, 4, 12, 13), 1.0)])
    width, height, objects = parse_detections(text)      # also unwraps {"answer": "<that JSON>"}
"""
from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Detection:
    """One detected object: class name, pixel box (x0, y0, x1, y1), confidence."""

    cls: str
    box: tuple[float, float, float, float]
    score: float = 1.0

    @property
    def center(self) -> tuple[float, float]:
        """Box centre (cx, cy)."""
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def size(self) -> tuple[float, float]:
        """Box width and height."""
        return (self.box[2] - self.box[0], self.box[3] - self.box[1])


class BadDetections(ValueError):
    """An answer that is not the detection JSON (the message quotes it)."""


def detections_answer(width: int, height: int, objects: list[Detection]) -> str:
    """The JSON answer text for a detection question."""
    ordered = sorted(objects, key=lambda d: -d.score)
    return json.dumps({"width": int(width), "height": int(height), "objects": [
        {"class": d.cls, "box": [round(float(v), 2) for v in d.box], "score": round(float(d.score), 4)}
        for d in ordered]})


def parse_detections(raw: str) -> tuple[int, int, list[Detection]]:
    """(width, height, detections) from a detection answer; BadDetections naming what is wrong."""
    try:
        obj = json.loads(raw)
        if isinstance(obj, dict) and isinstance(obj.get("answer"), str) and "objects" not in obj:
            obj = json.loads(obj["answer"])  # the server's {"answer": ...} wrapping of a JSON reply
        width, height, objects = int(obj["width"]), int(obj["height"]), obj["objects"]
        dets = [Detection(str(o["class"]), tuple(float(v) for v in o["box"]), float(o.get("score", 1.0)))
                for o in objects]
    except (TypeError, ValueError, KeyError) as e:
        raise BadDetections(f"not a detection answer ({type(e).__name__}: {e}): {str(raw)[:120]!r}") from None
    if any(len(d.box) != 4 or d.box[2] < d.box[0] or d.box[3] < d.box[1] for d in dets):
        raise BadDetections(f"a box is not [x0, y0, x1, y1] with x0 <= x1, y0 <= y1: {str(raw)[:120]!r}")
    return width, height, sorted(dets, key=lambda d: -d.score)
