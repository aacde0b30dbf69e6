"""Exact classical judge for mini-world images: colour segmentation + connected components.

Inputs: any RGB image (PIL image or uint8/float array HxWx3, HxW grey or HxWx4 also accepted; floats
with max <= 1 are taken as 0..1), of any size; renders, generated images, noise.
Outputs: `Judged` (per-kind counts, one `Box` per detected object, background phrase), and the
question helpers `count_objects`, `relation_holds`, `background_of`.

Usage:
    from compseed_lib.miniworld.judge import judge_scene, count_objects, relation_holds
    j = judge_scene(img); j.counts["ball"], j.background
    relation_holds(img, "star", "left", "box")   # True / False / None when either is absent

Method (numpy + scipy.ndimage, no learning):
 1. background colour = median of pixels not far from the overall median colour; background phrase =
    nearest prototype (RGB distance); a uniform colour cast (median - prototype, clipped) is removed;
 2. object pixels = chroma of (pixel - background colour), i.e. max - min channel of the difference,
    above `CHROMA_THRESHOLD` (insensitive to colour casts and background tint); 4-connected components;
    components smaller than `MIN_AREA_32` px (scaled by image area / 32^2) are dropped as specks;
 3. each component's kind = nearest kind hue (circular distance) to its chroma^2-weighted mean colour
    after removing the cast, so edge pixels mixed with the background weigh little.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from .render import Box
from .vocab import BACKGROUNDS, KINDS, check_kind, check_relation

log = logging.getLogger(__name__)
CHROMA_THRESHOLD = 75.0  # object pixels: max - min channel of (pixel - background) above this (0..255)
MIN_AREA_32 = 4.0  # smallest object area in px at 32x32, scaled with image area
CAST_LIMIT = 48.0  # largest colour cast (per channel) the judge corrects
CAST_MAX_DIST = 90.0  # correct a cast only when the background is this close to a prototype
FAR_FROM_MEDIAN = 60.0  # pixels this far from the median colour are not used for the background

_BG_NAMES = list(BACKGROUNDS)
_BG_PROTOS = np.asarray([BACKGROUNDS[n] for n in _BG_NAMES], dtype=np.float32)
_KIND_NAMES = list(KINDS)


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue angle in radians (-pi..pi] of RGB colours (..., 3), hexagon-free atan2 form."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.arctan2(np.sqrt(3.0) * (g - b), 2 * r - g - b)


_KIND_HUES = _hue(np.asarray([KINDS[n].rgb for n in _KIND_NAMES], dtype=np.float64))


@dataclass
class Judged:
    """What the judge sees in one image."""

    counts: dict[str, int] = field(default_factory=dict)
    boxes: list[Box] = field(default_factory=list)
    background: str = ""
    centroids: list[tuple[float, float]] = field(default_factory=list)  # (cx, cy) per box
    areas: list[int] = field(default_factory=list)  # pixels per box; boxes sorted largest first

    def centroid(self, kind: str) -> tuple[float, float] | None:
        """(cx, cy) of the largest component of `kind`, None if there is none."""
        return next((c for b, c in zip(self.boxes, self.centroids, strict=True) if b.kind == kind), None)


def to_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """Image -> float32 array HxWx3 on the 0..255 scale."""
    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise ValueError(f"expected an image array HxW, HxWx3 or HxWx4, got shape {arr.shape}")
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        floaty = np.issubdtype(arr.dtype, np.floating)
        arr = arr[..., :3].astype(np.float32)
        if floaty:
            arr = np.nan_to_num(arr)
            if arr.size and arr.max() <= 1.0:
                arr = arr * 255.0
        arr = np.clip(arr, 0, 255)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"empty image of shape {arr.shape}")
    return arr


def _background(arr: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """Background phrase, background colour and the colour cast to remove."""
    flat = arr.reshape(-1, 3)
    med = np.median(flat, axis=0)
    near = np.linalg.norm(flat - med, axis=1) < FAR_FROM_MEDIAN
    if near.sum() >= 0.25 * len(flat):
        med = np.median(flat[near], axis=0)
    dist = np.linalg.norm(_BG_PROTOS - med, axis=1)
    i = int(np.argmin(dist))
    cast = np.zeros(3, np.float32)
    if dist[i] < CAST_MAX_DIST:
        cast = np.clip(med - _BG_PROTOS[i], -CAST_LIMIT, CAST_LIMIT).astype(np.float32)
    return _BG_NAMES[i], med.astype(np.float32), cast


def judge_scene(image: Image.Image | np.ndarray) -> Judged:
    """Segment saturated blobs, name each by hue, and name the background; never fails on odd images."""
    arr = to_array(image)
    h, w = arr.shape[:2]
    background, bg_rgb, cast = _background(arr)
    diff = arr - bg_rgb
    chroma = diff.max(axis=2) - diff.min(axis=2)  # colourfulness relative to the background
    arr = arr - cast
    labels, n = ndimage.label(chroma > CHROMA_THRESHOLD)
    counts = {k: 0 for k in _KIND_NAMES}
    if n == 0:
        return Judged(counts, [], background)
    idx = np.arange(1, n + 1)
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    wgt = (chroma * chroma).ravel()
    lab = labels.ravel()
    sw = np.bincount(lab, weights=wgt, minlength=n + 1)[1:]
    mean = np.stack([np.bincount(lab, weights=wgt * arr[..., c].ravel(), minlength=n + 1)[1:]
                     for c in range(3)], axis=1) / np.maximum(sw, 1e-9)[:, None]
    hue = _hue(mean.astype(np.float64))
    hue_dist = np.abs(np.angle(np.exp(1j * (hue[:, None] - _KIND_HUES[None, :]))))  # circular distance
    kind_idx = np.argmin(hue_dist, axis=1)
    min_area = max(2.0, MIN_AREA_32 * h * w / 1024.0)
    keep = area >= min_area
    slices = ndimage.find_objects(labels)
    com = ndimage.center_of_mass(np.ones_like(chroma), labels, idx)
    judged = Judged(counts, [], background)
    for j in np.argsort(-area, kind="stable"):
        if not keep[j]:
            continue
        ys, xs = slices[j]
        kind = _KIND_NAMES[kind_idx[j]]
        counts[kind] += 1
        judged.boxes.append(Box(kind, float(xs.start), float(ys.start), float(xs.stop), float(ys.stop)))
        judged.centroids.append((float(com[j][1]) + 0.5, float(com[j][0]) + 0.5))  # pixel centre coords
        judged.areas.append(int(area[j]))
    return judged


def count_objects(image: Image.Image | np.ndarray, kind: str) -> int:
    """Number of objects of `kind` the judge finds."""
    check_kind(kind)
    return judge_scene(image).counts[kind]


def relation_holds(image: Image.Image | np.ndarray, a: str, relation: str, b: str) -> bool | None:
    """Whether `a <relation> b` holds; None when a or b is absent.

    Rule: take the centroid of the largest component of each kind (image y grows downwards);
    left iff cx_a < cx_b, right iff cx_a > cx_b, above iff cy_a < cy_b, below iff cy_a > cy_b.
    """
    check_kind(a), check_kind(b), check_relation(relation)
    return decide_relation(judge_scene(image), a, relation, b)


def decide_relation(judged: Judged, a: str, relation: str, b: str) -> bool | None:
    """`relation_holds` on an already judged image (same rule: centroids of the largest components)."""
    ca, cb = judged.centroid(a), judged.centroid(b)
    if ca is None or cb is None:
        return None
    return bool({"left": ca[0] < cb[0], "right": ca[0] > cb[0],
                 "above": ca[1] < cb[1], "below": ca[1] > cb[1]}[relation])


def background_of(image: Image.Image | np.ndarray) -> str:
    """Background phrase nearest to the image's background colour."""
    return _background(to_array(image))[0]
