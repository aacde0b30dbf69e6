"""Training scenes for the mini-world generator: captions in the prompt templates, exact renders.

Each scene is drawn from a numpy Generator seeded by its index, so scene i is the same on every
machine and a chunked, resumable build gives the same data as a one-shot build.
Caption mix: half counting ("three stars, at night", counts one..six), half spatial
("a ball on the left of a star", with ", <background>" appended half the time); every object
kind, background and ordered pair appears in both roles. A spatial caption that names no background
shows `vocab.DEFAULT_BACKGROUND` (unnamed="default"); stages 1-3 of the shipped model were trained
with unnamed="random" (a random background, as if named), which makes the seed pick the background.

Usage:
    caption, image = scene(17)                     # (str, uint8 array HxWx3)
    build_scene_cache(folder, n=200_000, workers=2)  # chunks of uint8 .npy + captions.json + world.json
    images, captions = load_scene_cache(folder, n)
    labels = caption_labels(captions)             # (N, 5): relation, kind_a, kind_b, count, background
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ... import prompts as P
from ...store import atomic_write_bytes, atomic_write_text
from ..render import render_count, render_relation
from ..vocab import DEFAULT_BACKGROUND
from .captions import is_spatial, object_named

log = logging.getLogger(__name__)
CHUNK = 10_000
UNNAMED = ("default", "random")  # what a spatial caption without a background shows


def objects_and_backgrounds() -> tuple[list[P.Obj], list[str]]:
    """Every mini-world object and background phrase, train split then eval split."""
    return P.world_objects("miniworld"), P.world_backgrounds("miniworld")


_OBJS, _BGS = objects_and_backgrounds()
# Caption structure as class labels (0 = absent), for the text encoder's auxiliary loss in train.py.
LABEL_FIELDS = ("relation", "kind_a", "kind_b", "count", "background")
_KIND = {o.name: i + 1 for i, o in enumerate(_OBJS)}
_BG = {b: i + 1 for i, b in enumerate(_BGS)}
_REL = {r: i + 1 for i, r in enumerate(P.RELATION_TEXT)}
_COUNT = {w: n for n, w in P.COUNT_WORDS.items()}
LABEL_SIZES = (len(_REL) + 1, len(_KIND) + 1, len(_KIND) + 1, max(_COUNT.values()) + 1, len(_BG) + 1)


def check_unnamed(unnamed: str) -> str:
    if unnamed not in UNNAMED:
        raise ValueError(f"unnamed_background must be one of {UNNAMED}, got {unnamed!r}")
    return unnamed


def scene(index: int, size: int = 32, max_count: int = 6, unnamed: str = "default") -> tuple[str, np.ndarray]:
    """Caption and rendered image of training scene `index` (deterministic); `unnamed` in UNNAMED.
    Both rules draw the same random numbers, so they differ only in unnamed-background scenes."""
    check_unnamed(unnamed)
    rng = np.random.default_rng([index, 7919])
    bg = _BGS[rng.integers(len(_BGS))]
    render_seed = int(rng.integers(2**31))
    if rng.random() < 0.5:
        obj = _OBJS[rng.integers(len(_OBJS))]
        count = int(rng.integers(1, max_count + 1))
        caption = P.numerical_text(obj, count, bg)
        img = render_count(obj.name, count, bg, seed=render_seed, size=size).image
    else:
        ia, ib = rng.choice(len(_OBJS), size=2, replace=False)
        a, b = _OBJS[ia], _OBJS[ib]
        rel = P.RELATION_PHRASES[list(P.RELATION_PHRASES)[rng.integers(4)]]
        caption = f"{a.singular} {P.RELATION_TEXT[rel]} {b.singular}"
        if rng.random() < 0.5:
            caption += f", {bg}"
        elif unnamed == "default":
            bg = DEFAULT_BACKGROUND
        img = render_relation(a.name, rel, b.name, bg, seed=render_seed, size=size).image
    return caption, np.asarray(img.convert("RGB"), dtype=np.uint8)


def caption_labels(captions: list[str]) -> np.ndarray:
    """(N, 5) int64 labels (LABEL_FIELDS) of training captions, exact or web-like (captions.py): what
    the text states, 0 where it states nothing (no count word, no relation); "" is all zeros."""
    out = np.zeros((len(captions), len(LABEL_FIELDS)), dtype=np.int64)
    for i, cap in enumerate(captions):
        if not cap:
            continue
        text, _, bg = cap.partition(", ")
        if bg and bg not in _BG:
            raise ValueError(f"caption {cap!r}: unknown background {bg!r}")
        out[i, 4] = _BG.get(bg, 0)
        if " and " in text:  # a relation left out: "a ball and a star"
            a, _, b = text.partition(" and ")
            out[i, 1:3] = _kind(a, cap), _kind(b, cap)
        elif is_spatial(text):
            a, rel, b = P.parse_spatial(text, "training caption")
            out[i, 0:3] = _REL[rel], _KIND[a.name], _KIND[b.name]
        else:  # "three balls", "balls", "some balls", "a few balls", "a ball"
            out[i, 1] = _kind(text, cap)
            out[i, 3] = _COUNT.get(text.split()[0], 0)
    return out


def _kind(phrase: str, caption: str) -> int:
    """Label of the object a phrase ends with ("a ball", "three balls")."""
    obj = object_named(phrase.split()[-1] if phrase.split() else "")
    if obj is None:
        raise ValueError(f"cannot read the structure of training caption {caption!r}")
    return _KIND[obj.name]


def build_scene_cache(folder: str | Path, n: int, size: int = 32, progress: bool = True,
                      unnamed: str = "default", workers: int = 1) -> None:
    """Render scenes 0..n-1 into `folder` in chunks, `workers` processes at a time; finished chunks are
    kept on a re-run. The folder's world.json records size and `unnamed`; chunks rendered under other
    settings are redone."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    world = {"size": size, "unnamed": check_unnamed(unnamed)}
    meta = folder / "world.json"
    if not meta.is_file() or json.loads(meta.read_text()) != world:
        stale = sorted(folder.glob("scenes_*.npy")) + sorted(folder.glob("captions_*.json"))
        if stale:
            log.info("scene cache %s was rendered under other settings: rendering again", folder)
        for f in stale:
            f.unlink()
        atomic_write_text(meta, json.dumps(world))
    spans = [(c, c * CHUNK, min(n, (c + 1) * CHUNK)) for c in range(-(-n // CHUNK))]
    todo = [(folder, c, lo, hi, size, unnamed) for c, lo, hi in spans if not _chunk_done(folder, c, hi - lo)]
    bar = tqdm(total=len(spans), initial=len(spans) - len(todo), desc="render scenes", disable=not progress)
    if workers > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(todo))) as pool:
            for _ in pool.map(_render_chunk, todo):
                bar.update(1)
    else:
        for job in todo:
            _render_chunk(job)
            bar.update(1)
    bar.close()


def _chunk_done(folder: Path, c: int, length: int) -> bool:
    cap_path = folder / f"captions_{c:04d}.json"
    return ((folder / f"scenes_{c:04d}.npy").is_file() and cap_path.is_file()
            and len(json.loads(cap_path.read_text())) == length)


def _render_chunk(job: tuple) -> None:
    """Render scenes lo..hi-1 into chunk c (images first, then the captions that mark it done)."""
    folder, c, lo, hi, size, unnamed = job
    caps, imgs = zip(*(scene(i, size, unnamed=unnamed) for i in range(lo, hi)))
    buf = io.BytesIO()
    np.save(buf, np.stack(imgs), allow_pickle=False)
    atomic_write_bytes(folder / f"scenes_{c:04d}.npy", buf.getvalue())
    atomic_write_text(folder / f"captions_{c:04d}.json", json.dumps(list(caps)))


def scene_cache_key(folder: str | Path) -> str:
    """A short text naming what the cache in `folder` holds (for caches derived from it)."""
    return (Path(folder) / "world.json").read_text().strip()


def load_scene_captions(folder: str | Path, n: int) -> list[str]:
    """Captions of the first n scenes (without their images)."""
    caps: list[str] = []
    for c in range(-(-n // CHUNK)):
        caps.extend(json.loads((Path(folder) / f"captions_{c:04d}.json").read_text()))
    return caps[:n]


def load_scene_cache(folder: str | Path, n: int) -> tuple[np.ndarray, list[str]]:
    """(uint8 images N x H x W x 3, captions) of the first n scenes."""
    imgs = [np.load(Path(folder) / f"scenes_{c:04d}.npy", allow_pickle=False) for c in range(-(-n // CHUNK))]
    return np.concatenate(imgs)[:n], load_scene_captions(folder, n)
