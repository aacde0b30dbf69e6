"""Mini-world vocabulary: object kinds (colour + shape), backgrounds (base colour), relations.

Inputs: nothing (hardcoded, so the renderer and the judge never depend on file contents).
Outputs: `KINDS` (name -> `Kind`), `BACKGROUNDS` (phrase -> base RGB), `TEXTURES` (phrase -> grain,
blotch amplitudes), `DEFAULT_BACKGROUND` (the scene of a prompt that names none), `RELATIONS`, and
`check_vocab_matches(prompt_dir)` which verifies that the prompt files in `prompt_dataset/miniworld/`
only use names known here.

Usage:
    from compseed_lib.miniworld.vocab import KINDS, BACKGROUNDS, check_vocab_matches
    KINDS["ball"].rgb, KINDS["ball"].shape
    check_vocab_matches("prompt_dataset/miniworld")

Design: objects are SATURATED colours with hues spread around the colour wheel; backgrounds are
LOW-chroma colours spread in brightness, so the judge segments objects by chroma and names them by hue.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..prompts import OPPOSITE, RELATIONS, PromptFileError, parse_spatial

__all__ = ["BACKGROUNDS", "DEFAULT_BACKGROUND", "KINDS", "OPPOSITE", "RELATIONS", "TEXTURES", "Kind",
           "check_background", "check_kind", "check_relation", "check_vocab_matches"]


@dataclass(frozen=True)
class Kind:
    """One object kind: its sprite shape and saturated RGB colour."""

    name: str
    shape: str
    rgb: tuple[int, int, int]


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("ball", "circle", (232, 28, 28)),       # red, hue ~0
    Kind("kite", "diamond", (248, 138, 16)),     # orange, hue ~30
    Kind("star", "star", (236, 232, 24)),        # yellow, hue ~59
    Kind("tent", "triangle", (28, 188, 44)),     # green, hue ~125
    Kind("ring", "annulus", (20, 200, 224)),     # cyan, hue ~187
    Kind("box", "square", (40, 72, 236)),        # blue, hue ~230
    Kind("cross", "plus", (146, 40, 226)),       # purple, hue ~274
    Kind("heart", "heart", (232, 30, 172)),      # magenta, hue ~318
)}
SHAPES = tuple(k.shape for k in KINDS.values())

# Low-chroma base colours, spread in brightness so even a drifted image keeps them apart.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "on the sand": (212, 190, 150),
    "in the snow": (236, 239, 244),
    "at night": (14, 22, 56),
    "on a stone floor": (118, 118, 118),
    "on a cloudy day": (150, 162, 188),
    "in a dark room": (86, 60, 40),
}
# Texture per background: (grain std, blotch amplitude), grey-level units on the 0-255 scale.
TEXTURES: dict[str, tuple[float, float]] = {
    "on the sand": (4.0, 6.0),
    "in the snow": (2.0, 4.0),
    "at night": (2.0, 3.0),
    "on a stone floor": (3.0, 9.0),
    "on a cloudy day": (1.5, 8.0),
    "in a dark room": (2.5, 4.0),
}
# A prompt that names no background ("a ball on the left of a star") shows this one, as a studio shot
# shows a plain backdrop: the seed then sets the layout, not the whole scene.
DEFAULT_BACKGROUND = "on a stone floor"


def _bad(what: str, value: object, valid) -> ValueError:
    return ValueError(f"unknown {what} {value!r}; valid: {sorted(valid)}")


def check_kind(kind: str) -> str:
    """Return `kind` if known, else ValueError naming it and the valid kinds."""
    if kind not in KINDS:
        raise _bad("object kind", kind, KINDS)
    return kind


def check_background(background: str) -> str:
    """Return `background` if known, else ValueError naming it and the valid backgrounds."""
    if background not in BACKGROUNDS:
        raise _bad("background", background, BACKGROUNDS)
    return background


def check_relation(relation: str) -> str:
    """Return `relation` if known, else ValueError naming it and the valid relations."""
    if relation not in RELATIONS:
        raise _bad("relation", relation, RELATIONS)
    return relation


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in text if s.strip() and not s.strip().startswith("#")]


def check_vocab_matches(prompt_dir: str | Path) -> None:
    """Raise ValueError if the mini-world prompt files use an object, background or relation unknown here."""
    root = Path(prompt_dir)
    problems: list[str] = []
    files = sorted(root.glob("*.txt"))
    if not files:
        raise ValueError(f"no prompt files (*.txt) in {root}")
    for path in files:
        for line in _lines(path):
            if path.name.startswith("objects_"):
                name = line.split(",")[0].strip()
                if name not in KINDS:
                    problems.append(f"{path.name}: object {name!r}")
            elif path.name.startswith("backgrounds_"):
                if line not in BACKGROUNDS:
                    problems.append(f"{path.name}: background {line!r}")
            elif path.name.startswith("spatial_prompts_"):
                try:
                    a, _, b = parse_spatial(line, path.name)
                except PromptFileError as e:
                    problems.append(str(e))
                    continue
                for name in (a.name, b.name):
                    if name not in KINDS:
                        problems.append(f"{path.name}: object {name!r} in {line!r}")
    if problems:
        raise ValueError(f"prompt files in {root} use names unknown to the mini world (kinds "
                         f"{sorted(KINDS)}, backgrounds {sorted(BACKGROUNDS)}): " + "; ".join(problems))
