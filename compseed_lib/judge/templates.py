"""Question templates: one question per prompt, and the inverse the judge server uses.

Inputs: a `prompts.Prompt` (counting or spatial).
Outputs: the question text the judge is asked, e.g.
  "How many stars are in this image? Answer with a single number."
  "Is the ball on the left of the star? Answer yes or no."
and `parse_question(text)` -> ('count', plural) | ('relation', a, relation, b) | ('detect', names) | None.
A detection question (`detect_question(["ball", "star"])`) asks for every object of those classes with
its box, for the field's benchmarks (`compseed_lib/benchmarks/`); the answer is JSON:
  {"width": W, "height": H, "objects": [{"class": "ball", "box": [x0, y0, x1, y1], "score": 1.0}, ...]}
(pixel boxes, x to the right, y down, most confident first).

Usage:
    q = question_for(prompt)
    parse_question(q)   # ('count', 'stars') or ('relation', 'ball', 'left', 'star')
    parse_question(detect_question(["ball", "star"]))   # ('detect', ('ball', 'star'))
"""
from __future__ import annotations

import re

from ..prompts import RELATION_SYNONYMS, RELATION_TEXT, Prompt

COUNT_TEMPLATE = "How many {plural} are in this image? Answer with a single number."
RELATION_TEMPLATE = "Is the {a} {phrase} the {b}? Answer yes or no."
DETECT_TEMPLATE = ("Detect every object of these classes in this image: {names}. Answer with JSON: "
                   '{{"width": W, "height": H, "objects": [{{"class": name, "box": [x0, y0, x1, y1], '
                   '"score": s}}]}}, boxes in pixels.')

_PHRASES = RELATION_SYNONYMS  # a hand-written question may use any of them
_PHRASE_RE = "|".join(re.escape(p) for p in sorted(_PHRASES, key=len, reverse=True))
_COUNT_Q = re.compile(r"^\s*how\s+many\s+(.+?)\s+"
                      r"(?:are\s+there\s+|are\s+|can\s+you\s+see\s+|do\s+you\s+see\s+)?(?:in|on)"
                      r"\s+(?:this|the)\s+(?:image|picture|photo)\b", re.IGNORECASE)
_DETECT_Q = re.compile(r"^\s*detect\s+every\s+object\s+of\s+these\s+classes\s+in\s+this\s+image:\s*"
                       r"(.+?)\.\s+answer\s+with\s+json", re.IGNORECASE | re.DOTALL)
_REL_Q = re.compile(r"^\s*is\s+(?:the|a|an)\s+(.+?)\s+(" + _PHRASE_RE + r")\s+(?:the|a|an)\s+(.+?)\s*"
                    r"(?:in\s+(?:this|the)\s+(?:image|picture|photo)\s*)?\?", re.IGNORECASE)


def question_for(prompt: Prompt) -> str:
    """The question asked about an image generated for `prompt`."""
    if prompt.kind == "count":
        return COUNT_TEMPLATE.format(plural=prompt.obj.plural)
    if prompt.kind == "spatial":
        if prompt.obj_b is None or prompt.relation not in RELATION_TEXT:
            raise ValueError(f"spatial prompt {prompt.id} ({prompt.text!r}) lacks object B or a known "
                             f"relation")
        return RELATION_TEMPLATE.format(a=prompt.obj.name, phrase=RELATION_TEXT[prompt.relation],
                                        b=prompt.obj_b.name)
    raise ValueError(f"prompt {prompt.id}: unknown kind {prompt.kind!r} (expected 'count' or 'spatial')")


def detect_question(classes) -> str:
    """The question asking for every object of `classes` (names, e.g. ['ball', 'star']) with its box."""
    names = [" ".join(str(c).split()) for c in classes]
    if not names or any(not n or ";" in n or "." in n for n in names):
        raise ValueError(f"detect_question needs class names without ';' or '.', got {list(classes)!r}")
    return DETECT_TEMPLATE.format(names="; ".join(dict.fromkeys(names)))


def parse_question(text: str) -> tuple | None:
    """Inverse of `question_for` / `detect_question`: ('count', plural), ('relation', a, relation, b) or
    ('detect', (name, ...)); None if none of them."""
    if not isinstance(text, str):
        return None
    m = _DETECT_Q.match(text)
    if m:
        return ("detect", tuple(" ".join(n.lower().split()) for n in m.group(1).split(";") if n.strip()))
    m = _COUNT_Q.match(text)
    if m:
        return ("count", " ".join(m.group(1).lower().split()))
    m = _REL_Q.match(text)
    if m:
        a, phrase, b = (" ".join(g.lower().split()) for g in m.groups())
        return ("relation", a, _PHRASES[phrase], b)
    return None
