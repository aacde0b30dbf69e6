"""The rule-based mini-world planner as a judge-server backend: a prompt in, an RPG regional plan out.

Served by `compseed serve-judge` as model "miniworld-planner", so the planner client
(`methods/planner.py`) talks to it exactly as it would to GPT-4o or a local LLM server. The request is
text only (the last user message is the prompt); the reply's content is the plan as JSON:
    {"split_ratio": "1,1,1", "base_ratio": 0.3, "regional_prompts": ["one ball, on the sand", ...]}
Rules (mini-world prompts only, read with the prompt parser of `prompts.py`):
  counts     "three balls, on the sand" -> a grid of three regions ("1,1,1,1": one row, three columns),
             "one ball, on the sand" in each; rows = floor(sqrt(n)), the first rows take the extra columns
  relations  "a ball on the left of a star" -> two columns ("1,1,1": ball | star), right swaps them;
             on top of / under -> two rows ("1;1"); each region "one <object>, <background>"
             (the scene's default background when the prompt names none)
  otherwise  one full region holding the prompt itself (no layout), base_ratio 0.
Split-ratio grammar (`methods/regional.py`): ";" separates rows, "," columns, the first number of a row
is its height, a lone number a full row.

Usage:
    MiniworldPlanner().answer("two stars, at night", None)
    plan_for("a kite under a ring")   # {'split_ratio': '1;1', 'base_ratio': 0.3, 'regional_prompts': [...]}
"""
from __future__ import annotations

import json
import math
import re

from ... import prompts as P

MODEL_ID = "miniworld-planner"
BASE_RATIO = 0.3  # share of the base prompt's cross-attention kept in every region (RPG's base_ratio)
_WORD_COUNT = {w: n for n, w in P.COUNT_WORDS.items()}
_COUNT = re.compile(r"^(\w+)\s+(.+?)\s*,\s*(.+?)\.?$", re.IGNORECASE)


def grid_ratio(n: int) -> str:
    """Split ratio of n equal regions on a grid: floor(sqrt(n)) rows, the first rows one column more."""
    rows = max(1, math.isqrt(n))
    cols = [n // rows + (1 if r < n % rows else 0) for r in range(rows)]
    return ";".join("1," + ",".join("1" * c) for c in cols)


def _objects() -> dict[str, P.Obj]:
    """Name, plural and singular (without article) -> object, for every mini-world object."""
    out = {}
    for o in P.world_objects("miniworld"):
        for word in (o.name, o.plural, o.singular.split(" ", 1)[1]):
            out[word.lower()] = o
    return out


def _region(obj: P.Obj, background: str) -> str:
    return P.numerical_text(obj, 1, background)  # "one ball, on the sand": the training captions' form


def plan_for(text: str) -> dict:
    """The plan (split_ratio, base_ratio, regional_prompts) of one prompt, by the rules above."""
    from ...miniworld.vocab import DEFAULT_BACKGROUND

    text = " ".join(text.split())
    objects, backgrounds = _objects(), {b.lower(): b for b in P.world_backgrounds("miniworld")}
    m = _COUNT.match(text)
    if m and m.group(1).lower() in _WORD_COUNT and m.group(2).lower() in objects \
            and m.group(3).lower() in backgrounds:
        n, obj, bg = _WORD_COUNT[m.group(1).lower()], objects[m.group(2).lower()], backgrounds[m.group(3).lower()]
        return {"split_ratio": grid_ratio(n), "base_ratio": BASE_RATIO, "regional_prompts": [_region(obj, bg)] * n}
    sentence, _, tail = text.rpartition(",")
    bg = backgrounds.get(tail.strip().lower()) if sentence else None
    try:
        a, relation, b = P.parse_spatial(sentence if bg else text)
    except P.PromptFileError:
        return {"split_ratio": "1", "base_ratio": 0.0, "regional_prompts": [text]}
    a, b = objects.get(a.name.lower()), objects.get(b.name.lower())
    if a is None or b is None:
        return {"split_ratio": "1", "base_ratio": 0.0, "regional_prompts": [text]}
    first, second = (a, b) if relation in ("left", "above") else (b, a)  # reading order: left/top first
    split = "1,1,1" if relation in ("left", "right") else "1;1"
    bg = bg or DEFAULT_BACKGROUND
    return {"split_ratio": split, "base_ratio": BASE_RATIO,
            "regional_prompts": [_region(first, bg), _region(second, bg)]}


class MiniworldPlanner:
    """Prompt text -> the plan as JSON text (text-only requests; the reply is the JSON itself)."""

    model_id = MODEL_ID
    needs_image = False
    answers_json = True

    def answer(self, question: str, image=None) -> str:
        """The plan of the prompt `question`, as JSON."""
        return json.dumps(plan_for(question))
