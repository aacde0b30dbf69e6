"""Procedural mini-world renderer with exact ground truth.

Inputs: object kinds, a background phrase, a seed and an image size (square, 32 or 64 px typical).
Outputs: a `Scene` with the PIL RGB image, one `Box` per sprite (pixel coordinates) and the background.

Usage:
    from compseed_lib.miniworld.render import render_count, render_relation, render_scene
    s = render_count("ball", 3, "on the sand", seed=0)          # s.image, s.boxes, s.count("ball") == 3
    r = render_relation("star", "left", "box", "at night", seed=1)
    m = render_scene(["ring", "ring", "tent"], "in the snow", seed=2, size=64)

Every sprite is a saturated, anti-aliased (supersampled) shape on a low-chroma textured background.
Sprites never overlap: their boxes are kept at least `gap` px apart (rejection sampling, shrinking all
sprites a little when a layout does not fit). Renders are a pure function of the arguments.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .vocab import BACKGROUNDS, KINDS, TEXTURES, check_background, check_kind, check_relation

log = logging.getLogger(__name__)
SUPERSAMPLE = 4
SPRITE_RANGE = (6.5, 9.0)  # sprite side in px at size 32; scales linearly with image size
# Thin shapes are drawn a bit larger so every kind has a comparable visible area.
SHAPE_SCALE = {"circle": 1.0, "diamond": 1.1, "star": 1.2, "triangle": 1.05, "annulus": 1.1,
               "square": 0.95, "plus": 1.1, "heart": 1.05}
MAX_COUNT = 12
TRIES = 200  # candidate positions per sprite before the layout is retried smaller


@dataclass(frozen=True)
class Box:
    """A sprite's bounding box in pixel coordinates (x to the right, y down; x1/y1 exclusive)."""

    kind: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def cx(self) -> float:
        """Centre x."""
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> float:
        """Centre y."""
        return (self.y0 + self.y1) / 2


@dataclass
class Scene:
    """A rendered image with its exact ground truth."""

    image: Image.Image
    boxes: list[Box] = field(default_factory=list)
    background: str = ""
    size: int = 32

    def count(self, kind: str) -> int:
        """Number of sprites of `kind` in the scene."""
        return sum(b.kind == kind for b in self.boxes)


# ----------------------------------------------------------------------------- shapes
def _star_polygon(points: int = 5, inner: float = 0.5) -> np.ndarray:
    ang = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    rad = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    poly = np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)
    poly[:, 1] += (1 - poly[:, 1].max()) / 2  # centre vertically in [-1, 1]
    return poly


_STAR = _star_polygon()


def _in_polygon(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd ray casting, vectorised over points."""
    inside = np.zeros(u.shape, dtype=bool)
    xs, ys = poly[:, 0], poly[:, 1]
    for i in range(len(poly)):
        xa, ya, xb, yb = xs[i - 1], ys[i - 1], xs[i], ys[i]
        crosses = (ya > v) != (yb > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            xcross = xa + (v - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (u < xcross)
    return inside


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean inside-test of `shape` at normalised coordinates u, v in [-1, 1] (v points down)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "diamond":
        return np.abs(u) / 0.8 + np.abs(v) <= 1.0
    if shape == "star":
        return _in_polygon(u, v, _STAR)
    if shape == "triangle":
        return (v <= 0.85) & (np.abs(u) <= (v + 0.95) / 1.8)
    if shape == "annulus":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.45 ** 2)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.88
    if shape == "plus":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.36) & (av <= 1.0)) | ((av <= 0.36) & (au <= 1.0))
    if shape == "heart":
        x, y = 1.15 * u, 0.125 - 1.125 * v
        return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0
    raise ValueError(f"unknown shape {shape!r}; valid: {sorted(SHAPE_SCALE)}")


def _coverage(shape: str, x0: float, y0: float, side: float, size: int) -> tuple[np.ndarray, int, int]:
    """Anti-aliased coverage (0..1) of a sprite over its pixel footprint, and the footprint's origin."""
    px0, py0 = int(np.floor(x0)), int(np.floor(y0))
    px1, py1 = min(size, int(np.ceil(x0 + side))), min(size, int(np.ceil(y0 + side)))
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    xs = (np.arange(px0, px1)[:, None] + sub[None, :]).ravel()
    ys = (np.arange(py0, py1)[:, None] + sub[None, :]).ravel()
    half = side / 2
    u = (xs[None, :] - (x0 + half)) / half
    v = (ys[:, None] - (y0 + half)) / half
    inside = shape_mask(shape, np.broadcast_to(u, (len(ys), len(xs))), np.broadcast_to(v, (len(ys), len(xs))))
    cov = inside.reshape(py1 - py0, SUPERSAMPLE, px1 - px0, SUPERSAMPLE).mean(axis=(1, 3))
    return cov, px0, py0


# ----------------------------------------------------------------------------- background
def _background(background: str, size: int, rng: np.random.Generator) -> np.ndarray:
    base = np.asarray(BACKGROUNDS[background], dtype=np.float32)
    grain, blotch = TEXTURES[background]
    cells = max(2, size // 8 + 2)
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    # bilinear upsampling of the coarse field -> smooth blotches
    t = np.linspace(0, cells - 1, size, dtype=np.float32)
    i0 = np.clip(np.floor(t).astype(int), 0, cells - 2)
    f = t - i0
    rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]
    smooth = rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]
    lum = blotch * smooth + grain * rng.standard_normal((size, size)).astype(np.float32)
    img = base[None, None, :] + lum[:, :, None]
    img += 0.4 * grain * rng.standard_normal((size, size, 3)).astype(np.float32)
    return img


# ----------------------------------------------------------------------------- layout
def _layout(kinds: list[str], size: int, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """(x0, y0, side) per sprite, boxes at least `gap` px apart and `margin` px inside the image."""
    k = size / 32
    gap, margin = 2.0 * k, 1.0 * k
    base = [rng.uniform(*SPRITE_RANGE) * k * SHAPE_SCALE[KINDS[n].shape] for n in kinds]
    order = np.argsort([-b for b in base], kind="stable")  # big sprites first pack better
    scale = 1.0
    for _attempt in range(60):
        placed: dict[int, tuple[float, float, float]] = {}
        for i in order:
            side = base[i] * scale
            hi = size - margin - side
            if hi <= margin:
                break
            xy = rng.uniform(margin, hi, size=(TRIES, 2))
            ok = np.ones(TRIES, dtype=bool)
            for px, py, ps in placed.values():
                ok &= ((xy[:, 0] + side + gap <= px) | (px + ps + gap <= xy[:, 0])
                       | (xy[:, 1] + side + gap <= py) | (py + ps + gap <= xy[:, 1]))
            if not ok.any():
                break
            x, y = xy[np.argmax(ok)]
            placed[int(i)] = (float(x), float(y), float(side))
        if len(placed) == len(kinds):
            return [placed[i] for i in range(len(kinds))]
        scale *= 0.97
    raise RuntimeError(f"cannot place {len(kinds)} sprites without overlap in a {size}px image")


def _compose(kinds: list[str], layout: list[tuple[float, float, float]], background: str, size: int,
             rng: np.random.Generator) -> Scene:
    img = _background(background, size, rng)
    boxes = []
    for name, (x0, y0, side) in zip(kinds, layout, strict=True):
        kind = KINDS[name]
        cov, px0, py0 = _coverage(kind.shape, x0, y0, side, size)
        colour = np.asarray(kind.rgb, np.float32) * rng.uniform(0.92, 1.0)  # slight per-instance shade
        region = img[py0:py0 + cov.shape[0], px0:px0 + cov.shape[1]]
        region[:] = region * (1 - cov[..., None]) + colour * cov[..., None]
        boxes.append(Box(name, x0, y0, x0 + side, y0 + side))
    arr = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Scene(Image.fromarray(arr, "RGB"), boxes, background, size)


def _check_common(background: str, size: int) -> None:
    check_background(background)
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")


# ----------------------------------------------------------------------------- public API
def render_scene(objects: list[str], background: str, seed: int, size: int = 32) -> Scene:
    """Render the given sprites (a list of kinds, repeats allowed) at random non-overlapping places."""
    _check_common(background, size)
    for name in objects:
        check_kind(name)
    if len(objects) > MAX_COUNT:
        raise ValueError(f"at most {MAX_COUNT} objects per scene, got {len(objects)}")
    rng = np.random.default_rng(seed)
    return _compose(list(objects), _layout(list(objects), size, rng), background, size, rng)


def render_count(kind: str, count: int, background: str, seed: int, size: int = 32) -> Scene:
    """Render `count` sprites of `kind` (0..12; the mini world uses 1..6) on `background`."""
    check_kind(kind)
    if not isinstance(count, (int, np.integer)) or not 0 <= count <= MAX_COUNT:
        raise ValueError(f"count must be an integer in 0..{MAX_COUNT}, got {count!r}")
    return render_scene([kind] * int(count), background, seed, size)


def render_relation(a: str, relation: str, b: str, background: str, seed: int, size: int = 32) -> Scene:
    """Render one `a` and one `b` so that `a <relation> b` clearly holds (left/right/above/below).

    The centres differ by at least a quarter of the image along the relation's axis, and that offset
    is at least twice the offset along the other axis; boxes never overlap.
    """
    check_kind(a), check_kind(b), check_relation(relation)
    _check_common(background, size)
    rng = np.random.default_rng(seed)
    k = size / 32
    gap, margin = 2.0 * k, 1.0 * k
    for _attempt in range(200):
        sa, sb = (rng.uniform(*SPRITE_RANGE) * k * SHAPE_SCALE[KINDS[n].shape] for n in (a, b))
        main = rng.uniform(max(0.25 * size, (sa + sb) / 2 + gap), size - 2 * margin - (sa + sb) / 2)
        cross = rng.uniform(-0.35, 0.35) * main
        # offset of b's centre from a's centre, in (along, across) of the relation axis
        dx, dy = {"left": (main, cross), "right": (-main, cross),
                  "above": (cross, main), "below": (cross, -main)}[relation]
        ax_lo = max(margin + sa / 2, margin + sb / 2 - dx)
        ax_hi = min(size - margin - sa / 2, size - margin - sb / 2 - dx)
        ay_lo = max(margin + sa / 2, margin + sb / 2 - dy)
        ay_hi = min(size - margin - sa / 2, size - margin - sb / 2 - dy)
        if ax_lo > ax_hi or ay_lo > ay_hi:
            continue
        acx, acy = rng.uniform(ax_lo, ax_hi), rng.uniform(ay_lo, ay_hi)
        bcx, bcy = acx + dx, acy + dy
        ra = (acx - sa / 2, acy - sa / 2, sa)
        rb = (bcx - sb / 2, bcy - sb / 2, sb)
        apart = (ra[0] + sa + gap <= rb[0] or rb[0] + sb + gap <= ra[0]
                 or ra[1] + sa + gap <= rb[1] or rb[1] + sb + gap <= ra[1])
        if apart:
            return _compose([a, b], [ra, rb], background, size, rng)
    raise RuntimeError(f"cannot place {a} {relation} {b} in a {size}px image")  # pragma: no cover
