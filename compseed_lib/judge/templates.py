"""Question templates: one question per prompt, and the inverse the judge server uses.

Inputs: a `prompts.Prompt` (counting or spatial).
Outputs: the question text the judge is asked, e.g.
  "How many stars are in this image? Answer with a single number."
  "Is the ball on the left of the star? Answer yes or no."
and `parse_question(text)` -> ('count', plural) | ('relation', a, relation, b) | None.

Usage:
    q = question_for(prompt)
    parse_question(q)   # ('count', 'stars') or ('relation', 'ball', 'left', 'star')
"""
from __future__ import annotations

import re

from ..prompts import RELATION_SYNONYMS, RELATION_TEXT, Prompt

COUNT_TEMPLATE = "How many {plural} are in this image? Answer with a single number."
RELATION_TEMPLATE = "Is the {a} {phrase} the {b}? Answer yes or no."

_PHRASES = RELATION_SYNONYMS  # a hand-written question may use any of them
_PHRASE_RE = "|".join(re.escape(p) for p in sorted(_PHRASES, key=len, reverse=True))
_COUNT_Q = re.compile(r"^\s*how\s+many\s+(.+?)\s+"
                      r"(?:are\s+there\s+|are\s+|can\s+you\s+see\s+|do\s+you\s+see\s+)?(?:in|on)"
                      r"\s+(?:this|the)\s+(?:image|picture|photo)\b", re.IGNORECASE)
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


def parse_question(text: str) -> tuple[str, str] | tuple[str, str, str, str] | None:
    """Inverse of `question_for`: ('count', plural) or ('relation', a, relation, b); None if neither."""
    if not isinstance(text, str):
        return None
    m = _COUNT_Q.match(text)
    if m:
        return ("count", " ".join(m.group(1).lower().split()))
    m = _REL_Q.match(text)
    if m:
        a, phrase, b = (" ".join(g.lower().split()) for g in m.groups())
        return ("relation", a, _PHRASES[phrase], b)
    return None
