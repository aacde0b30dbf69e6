"""Answer parsing: a judge's raw text -> a count or a yes/no verdict, or None when it is unclear.

The original code scored answers by substring ("12" counted as 2). Here numbers are whole tokens,
several different numbers or a refusal give None, and JSON answers ({"answer": "3"}) are unwrapped.

Inputs: raw answer text; a `Prompt` for scoring.
Outputs: `parse_count` -> int | None, `parse_yes_no` -> bool | None, `is_correct` -> bool | None.

Usage:
    parse_count("There are 12 balls.")   # 12
    parse_count("2 or 3")                # None
    parse_yes_no('{"answer": "yes"}')    # True
    is_correct(prompt, parse_count(raw))
"""
from __future__ import annotations

import json
import re

from ..prompts import Prompt

NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
ZERO_WORDS = {"no", "none", "nothing", "nobody"}
YES_WORDS = {"yes", "yeah", "yep", "true", "correct"}
NO_WORDS = {"no", "nope", "false", "incorrect"}
# Phrases that mark a refusal or an admission of not knowing.
_REFUSAL = re.compile(r"\b(?:can't|can not|cannot|can’t|unable|unknown|sorry|not sure|unsure|unclear|"
                      r"don't know|do not know|don’t know|impossible to|i am not able|i'm not able)\b",
                      re.IGNORECASE)
_TOKEN = re.compile(r"\d+(?:\.\d+)?|[a-z]+(?:'[a-z]+)?")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL | re.IGNORECASE)
_JSON_KEYS = ("answer", "count", "number", "value", "result")


def _unwrap_json(text: str):
    """The answer inside a JSON object (or a code-fenced one); the text itself when it is not JSON."""
    s = text.strip()
    m = _FENCE.match(s)
    if m:
        s = m.group(1).strip()
    if not s.startswith("{"):
        return text
    try:
        obj = json.loads(s)
    except ValueError:
        return text
    if isinstance(obj, dict):
        for key in _JSON_KEYS:
            if key in obj:
                return obj[key]
        if len(obj) == 1:
            return next(iter(obj.values()))
    return None


def parse_count(text) -> int | None:
    """A single whole-token count (digits or zero..twenty, 'no'/'none' -> 0); None if unclear."""
    if text is None:
        return None
    value = _unwrap_json(text) if isinstance(text, str) else text
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and value >= 0 else None
    if not isinstance(value, str):
        return None
    if _REFUSAL.search(value):
        return None
    tokens = _TOKEN.findall(value.lower())
    numbers: set[int] = set()
    for tok in tokens:
        if tok[0].isdigit():
            f = float(tok)
            if not f.is_integer():
                return None  # "2.5 balls" is no count
            numbers.add(int(f))
        elif tok in NUMBER_WORDS:
            numbers.add(NUMBER_WORDS[tok])
    if len(numbers) == 1:
        return numbers.pop()
    if not numbers and any(tok in ZERO_WORDS for tok in tokens):
        return 0
    return None


def _verdict(word: str) -> bool | None:
    return True if word in YES_WORDS else False if word in NO_WORDS else None


def parse_yes_no(text) -> bool | None:
    """True/False from a yes/no answer (leading word or the single clear verdict); None if unclear."""
    if text is None:
        return None
    value = _unwrap_json(text) if isinstance(text, str) else text
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        return None
    # A verdict is a yes/no word that opens or closes a clause: "Yes, there is no doubt" is yes,
    # "yes and no" is contradictory. true/false count only when they open a clause.
    verdicts = []
    for clause in re.split(r"[.,;:!?\n()\"]+", value.lower()):
        tokens = _TOKEN.findall(clause)
        if not tokens:
            continue
        first = _verdict(tokens[0])
        if first is not None:
            verdicts.append(first)
        last = tokens[-1]
        if len(tokens) > 1 and last in ("yes", "no") and _verdict(last) is not None:
            verdicts.append(_verdict(last))
    if not verdicts:
        return None
    if len(set(verdicts)) > 1:
        return None
    if _REFUSAL.search(value) and _TOKEN.findall(value.lower())[0] not in YES_WORDS | NO_WORDS:
        return None
    return verdicts[0]


def is_correct(prompt: Prompt, parsed) -> bool | None:
    """Whether a parsed answer matches the prompt (count equal / relation affirmed); None if unparsed."""
    if parsed is None:
        return None
    if prompt.kind == "count":
        return parsed == prompt.count
    if prompt.kind == "spatial":
        return parsed is True
    raise ValueError(f"prompt {prompt.id}: unknown kind {prompt.kind!r}")


def parse_answer(prompt: Prompt, raw) -> int | bool | None:
    """Parse a raw answer the way the prompt's kind needs (count or yes/no)."""
    return parse_count(raw) if prompt.kind == "count" else parse_yes_no(raw)


def answer_text(parsed: int | bool | None) -> str | None:
    """The parsed answer as stored in the ledger: '3', 'yes', 'no' or None."""
    if parsed is None:
        return None
    if isinstance(parsed, bool):
        return "yes" if parsed else "no"
    return str(parsed)
