"""Answer parsing: a judge's raw text -> the asked object's count or a yes/no verdict, or None (unknown).

A non-answer is *unknown*, never wrong (DESIGN §1). The parser knows the question: which object a
count question asks about, which objects and relation a yes/no question names. So:
- "There are 3 balls and 2 stars." asked about balls -> 3; about stars -> 2; about kites -> None;
- refusals ("No idea.", "There is no way to tell", "I can't determine that"), hedges ("about 3",
  "maybe", "at least 2", "a few"), ranges ("2 or 3", "3-4", "between 2 and 4"), negative or
  fractional numbers, and answers that never state a count give None;
- counts are read as digits, words (zero..ninety-nine), "a dozen" / "half a dozen", "a pair of",
  "a single ball" / "a ball", "none" / "no balls" / "zero";
- yes/no: a verdict word opening or closing a clause ("Yes, ...", "..., no."), or a restatement of the
  relation ("The ball is to the left of the star", its converse "the star is on the right of the
  ball", negated forms, "there is no ball"); conflicting verdicts give None.
Numbers are whole tokens (the original code scored "12" as 2), and JSON answers ({"answer": "3"}) and
code-fenced JSON are unwrapped first.

Inputs: raw answer text; the asked object(s) as `prompts.Obj` or plain words; a `Prompt` for scoring.
Outputs: `parse_count` -> int | None, `parse_yes_no` -> bool | None, `parse_answer`, `is_correct`.

Usage:
    parse_count("There are 12 balls and 2 stars.", obj=ball)   # 12
    parse_count("2 or 3")                                      # None
    parse_yes_no("No idea.")                                   # None
    parse_yes_no("The star is on the right of the ball.", relation=(ball, "left", star))  # True
    is_correct(prompt, parse_answer(prompt, raw))
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence

from ..prompts import OPPOSITE, RELATION_SYNONYMS, Obj, Prompt

UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
        "ninety": 90}
YES_WORDS = {"yes", "yeah", "yep", "yup", "true", "correct", "affirmative", "indeed", "absolutely",
             "definitely", "certainly"}
NO_WORDS = {"no", "nope", "nah", "false", "incorrect", "negative"}
# A refusal or an admission of not knowing anywhere in the answer makes it unknown.
_REFUSAL = re.compile(
    r"\b(?:can't|cannot|can not|couldn't|could not|unable|not able|unknown|sorry|not sure|unsure|unclear|"
    r"uncertain|not certain|don't know|do not know|no idea|no way to|hard to|difficult to|impossible|"
    r"not possible|cannot be determined|can't be determined|not clear|ambiguous|unanswerable|"
    r"not enough information|insufficient|n/a|not applicable|i'm afraid|as an ai)\b", re.IGNORECASE)
# Hedges: an estimate or a bound is no count; a "maybe" is no verdict.
_COUNT_HEDGE = re.compile(
    r"\b(?:about|around|approximately|approx|roughly|nearly|almost|maybe|perhaps|possibly|probably|likely|"
    r"at least|at most|more than|less than|fewer than|over|up to|or so|or more|or fewer|or less|several|"
    r"a few|few|many|some|multiple|numerous|a couple|couple of|a lot|lots|a bunch|dozens|estimate|"
    r"estimated|guess|might|could be|may be|ish)\b", re.IGNORECASE)
_YES_NO_HEDGE = re.compile(
    r"\b(?:maybe|perhaps|possibly|probably|likely|might|could be|may be|partially|partly|somewhat|"
    r"kind of|sort of|not really|not exactly|it depends|depends|more or less|roughly|hard to say)\b",
    re.IGNORECASE)
_NUMBER_WORD = r"(?:\d+|" + "|".join([*UNITS, *TENS]) + r")"
_RANGE = re.compile(rf"\b{_NUMBER_WORD}\s*(?:-|–|—|/|to|or)\s*{_NUMBER_WORD}\b|\bbetween\b|\beither\b",
                    re.IGNORECASE)
_NEGATIVE = re.compile(r"(?:^|[\s(:=\[])[-−]\s*\d|\bminus\b|\bnegative\s+\d", re.IGNORECASE)
_FRACTION = re.compile(r"\b\d+[.,]\d+\b|\bhalf\b(?!\s+a\s+dozen)", re.IGNORECASE)
_TOKEN = re.compile(r"\d+|[a-z]+(?:'[a-z]+)?|[.;:!?\n,()\"=]")
_BOUNDARY = set(".;!?\n()\"")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL | re.IGNORECASE)
_JSON_KEYS = ("answer", "count", "number", "value", "result")
# Words between a number and what it counts that say nothing about which object it is.
_GENERIC = {"of", "in", "the", "this", "that", "image", "picture", "photo", "scene", "total", "all", "visible",
            "objects", "object", "items", "item", "things", "thing", "them", "it", "here", "there", "is",
            "are", "shown", "present", "altogether", "overall", "and", "clearly", "can", "be", "seen", "i",
            "see", "count", "counted", "exactly", "only", "just", "precisely", "in total", "pieces", ","}
_NEGATION = {"not", "aren't", "isn't", "don't", "doesn't", "without", "never"}
_LOOKAHEAD = 4  # tokens between a number and the noun it counts ("3 small red balls")
_LOOKBACK = 7  # tokens between a noun and a number stated after it ("the number of balls in the image is 3")
_LINK = {"is", "are", ":", "=", "of", "the", "in", "this", "image", "picture", "photo", "total", "number",
         "count", "there", "count:", "equals", "was", "i", "see", "counted", "exactly"}


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


_COMPOUND = re.compile(r"\b(" + "|".join(TENS) + r")-(one|two|three|four|five|six|seven|eight|nine)\b")


def _normalise(text: str) -> str:
    """Lower case, straight apostrophes, 'twenty-one' as 'twenty one' (so it is no range)."""
    return _COMPOUND.sub(r"\1 \2", text.replace("’", "'").replace("‘", "'").lower())


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


# ------------------------------------------------------------------ object words
def _plural_forms(word: str) -> set[str]:
    return {word, word + "s", word + "es"}


def object_words(obj: Obj | str | None) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
    """(all word sequences naming the object, the singular ones) as token tuples."""
    if obj is None:
        return (), ()
    if isinstance(obj, str):
        obj = Obj(obj, obj, obj)
    singular = {obj.name.lower()}
    if obj.singular and obj.singular.split(" ", 1)[0].lower() in ("a", "an") and " " in obj.singular:
        singular.add(obj.singular.split(" ", 1)[1].lower())
    every = set()
    for s in singular:
        every |= _plural_forms(s)
    every.add(obj.plural.lower())
    as_tokens = lambda words: tuple(sorted({tuple(_tokens(w)) for w in words if _tokens(w)}, key=len,
                                           reverse=True))
    return as_tokens(every), as_tokens(singular)


@functools.cache
def _vocabulary() -> tuple[tuple[str, ...], ...]:
    """Token sequences of every object word the kit's prompt worlds know (to spot *other* objects)."""
    from .. import prompts

    seqs: set[tuple[str, ...]] = set()
    for world in prompts.WORLDS:
        for o in prompts.world_objects(world):
            seqs.update(object_words(o)[0])
    return tuple(sorted(seqs, key=len, reverse=True))


def _match(tokens: Sequence[str], i: int, seqs: Iterable[tuple[str, ...]]) -> int:
    """Length of the first sequence in `seqs` starting at tokens[i] (0 if none)."""
    for seq in seqs:
        if tuple(tokens[i:i + len(seq)]) == seq:
            return len(seq)
    return 0


# ------------------------------------------------------------------ counts
def _numbers(tokens: list[str], singular: tuple[tuple[str, ...], ...]) -> list[tuple[int, int, int]]:
    """(start, end, value) of every count stated in the token list (end exclusive)."""
    out, i = [], 0
    while i < len(tokens):
        t = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if t.isdigit():
            out.append((i, i + 1, int(t)))
            i += 1
        elif t in TENS:
            if nxt in UNITS and 0 < UNITS[nxt] < 10:
                out.append((i, i + 2, TENS[t] + UNITS[nxt]))
                i += 2
            else:
                out.append((i, i + 1, TENS[t]))
                i += 1
        elif t == "half" and tokens[i + 1:i + 3] == ["a", "dozen"]:
            out.append((i, i + 3, 6))
            i += 3
        elif t in ("a", "one") and nxt == "dozen":
            out.append((i, i + 2, 12))
            i += 2
        elif t in UNITS and nxt == "dozen":
            out.append((i, i + 2, 12 * UNITS[t]))
            i += 2
        elif t == "dozen":
            out.append((i, i + 1, 12))
            i += 1
        elif t == "a" and nxt == "pair" and i + 2 < len(tokens) and tokens[i + 2] == "of":
            out.append((i, i + 3, 2))
            i += 3
        elif t in ("a", "an", "one") and nxt == "single":
            out.append((i, i + 2, 1))
            i += 2
        elif t in UNITS:
            out.append((i, i + 1, UNITS[t]))
            i += 1
        elif t in ("a", "an", "single") and any(_match(tokens, j, singular)
                                                for j in range(i + 1, min(i + 3, len(tokens)))):
            out.append((i, i + 1, 1))  # "a ball", "a red ball": one of the asked object
            i += 1
        else:
            i += 1
    return out


def _counted(tokens: list[str], start: int, end: int, asked, vocab) -> str:
    """What the number at tokens[start:end] counts: 'asked', 'other' or 'free' (no object named)."""
    for j in range(end, min(end + _LOOKAHEAD, len(tokens))):
        t = tokens[j]
        if t in _BOUNDARY or t == "," or t.isdigit() or t in UNITS or t in TENS:
            break
        if _match(tokens, j, asked):
            return "asked"
        if _match(tokens, j, vocab):
            return "other"
    if end < len(tokens):
        t = tokens[end]
        if t not in _BOUNDARY and t not in _GENERIC and t != "," and not t.isdigit():
            return "other"  # "3 cats": a word the kit does not know, but a thing all the same
    # stated after its noun: "balls: 3", "the number of balls in this image is 3"
    for j in range(start - 1, max(-1, start - 1 - _LOOKBACK), -1):
        t = tokens[j]
        if t in _BOUNDARY or t == "," or t.isdigit() or t in UNITS or t in TENS:
            break
        for k in range(max(0, j - 3), j + 1):
            n = _match(tokens, k, asked)
            if n and k + n - 1 == j:
                return "asked"
            n = _match(tokens, k, vocab)
            if n and k + n - 1 == j:
                return "other"
        if t not in _LINK:
            break
    return "free"


def _zero_for(tokens: list[str], asked, mentions_asked: bool) -> bool:
    """'no balls', 'not any balls', 'zero balls' (handled as a number), 'none', 'nothing'."""
    for i, t in enumerate(tokens):
        if t in ("no", "any") and any(_match(tokens, j, asked) for j in range(i + 1, min(i + 3, len(tokens)))):
            if t == "no" or any(u in _NEGATION for u in tokens[max(0, i - 3):i]):
                return True
        if t in ("none", "nothing") and (mentions_asked or all(u not in UNITS for u in tokens)):
            return True
        if t == "no" and i + 1 < len(tokens) and (tokens[i + 1] in ("objects", "object", "items", "such") or
                                                   (not asked and tokens[i + 1].isalpha())):
            return True  # without an asked object, "no <noun>" is a zero
    return False


def parse_count(text, obj: Obj | str | None = None) -> int | None:
    """The count of `obj` stated in an answer (digits, words, 'a dozen', 'none' ...); None if unknown.

    `obj` is the asked object (an `Obj`, or its plural as a word); without it, the answer must state
    exactly one count and name no other object.
    """
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
    s = _normalise(value)
    if _REFUSAL.search(s) or _COUNT_HEDGE.search(s) or _RANGE.search(s) or _NEGATIVE.search(s) \
            or _FRACTION.search(s):
        return None
    tokens = _tokens(s)
    asked, singular = object_words(obj)
    vocab = [v for v in _vocabulary() if v not in set(asked)]
    mentions_asked = any(_match(tokens, i, asked) for i in range(len(tokens)))
    kinds: dict[str, set[int]] = {"asked": set(), "other": set(), "free": set()}
    for start, end, n in _numbers(tokens, singular):
        kind = _counted(tokens, start, end, asked, vocab)
        kinds["free" if kind == "other" and obj is None else kind].add(n)  # no object asked: any noun will do
    if kinds["asked"]:
        return kinds["asked"].pop() if len(kinds["asked"]) == 1 else None
    if _zero_for(tokens, asked, mentions_asked):
        return 0 if not kinds["free"] or kinds["free"] == {0} else None
    if kinds["other"] and not mentions_asked:
        return None  # "There are 2 stars" when asked about balls: says nothing about balls
    if len(kinds["free"]) == 1:
        return kinds["free"].pop()
    return None


# ------------------------------------------------------------------ yes / no
_STATE_VERB = r"(?:is|are|sits|lies|appears|seems|stands|located|positioned|placed|situated|to be|\s)*"


def _relation_statements(s: str, relation) -> list[bool]:
    """Verdicts from restatements of the asked relation ('the ball is (not) left of the star'), its
    converse, or an asked object declared absent."""
    a, rel, b = relation
    a_words, _ = object_words(a)
    b_words, _ = object_words(b)
    alt = lambda seqs: "|".join(re.escape(" ".join(q)) for q in seqs)
    if not a_words or not b_words:
        return []
    phrases = "|".join(re.escape(p) for p in sorted(RELATION_SYNONYMS, key=len, reverse=True))
    out = []
    pattern = re.compile(rf"\b(?:the |a |an )?({alt(a_words)}|{alt(b_words)})\b\s*{_STATE_VERB}"
                         rf"(not |n't |never )?(?:directly |slightly |just |clearly |to be )*({phrases})\s+"
                         rf"(?:the |a |an )?({alt(a_words)}|{alt(b_words)})\b")
    words_a = {" ".join(q) for q in a_words}
    for m in pattern.finditer(s):
        x, neg, phrase, y = m.groups()
        if (x in words_a) == (y in words_a):
            continue
        said = RELATION_SYNONYMS[phrase]
        if x not in words_a:  # converse: "the star is right of the ball" == "the ball is left of the star"
            said = OPPOSITE[said]
        holds = said == rel if said in (rel, OPPOSITE[rel]) else None
        if holds is None:
            if neg:
                continue
            holds = False  # "the ball is above the star", asked left: another relation, not this one
        out.append(holds != bool(neg))
    either = f"{alt(a_words)}|{alt(b_words)}"
    absent = re.compile(rf"\b(?:there (?:is|are) no|there (?:isn't|aren't) (?:a |an |any )?|no|"
                        rf"without (?:a |an |any )?)\s*({either})\b|\b({either}) (?:is|are) "
                        rf"(?:not|n't) (?:present|visible|shown|in the image)")
    if absent.search(s):
        out.append(False)
    return out


def _verdict(word: str) -> bool | None:
    return True if word in YES_WORDS else False if word in NO_WORDS else None


def parse_yes_no(text, relation: tuple[Obj | str, str, Obj | str] | None = None) -> bool | None:
    """True/False from a yes/no answer; None for refusals, hedges, contradictions and non-answers.

    `relation` is the asked (object A, relation, object B); with it, restatements of the relation
    ("the ball is to the left of the star") and absent objects ("there is no star") are verdicts too.
    """
    if text is None:
        return None
    value = _unwrap_json(text) if isinstance(text, str) else text
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        return None
    s = _normalise(value)
    if _REFUSAL.search(s) or _YES_NO_HEDGE.search(s):
        return None
    # A verdict word opens or closes a clause: "Yes, there is no doubt" is yes, "yes and no" conflicts.
    verdicts = []
    for clause in re.split(r"[.,;:!?\n()\"]+", s):
        tokens = _TOKEN.findall(clause)
        if not tokens:
            continue
        first = _verdict(tokens[0])
        if first is not None and not (tokens[0] == "no" and len(tokens) > 1 and tokens[1] not in
                                      ("it", "the", "that", "this", "they", "not", "its", "it's")):
            verdicts.append(first)  # "No ball is there" is an absence, read below; "No, it isn't" a verdict
        if len(tokens) > 1 and tokens[-1] in ("yes", "no"):
            verdicts.append(tokens[-1] == "yes")
        if tokens in (["that", "is", "right"], ["that's", "right"], ["that", "is", "wrong"], ["that's", "wrong"],
                      ["not", "at", "all"], ["of", "course"]):
            verdicts.append(tokens[-1] in ("right", "course"))
    if relation is not None:
        verdicts += _relation_statements(s, relation)
    if not verdicts or len(set(verdicts)) > 1:
        return None
    return verdicts[0]


# ------------------------------------------------------------------ scoring
def parse_answer(prompt: Prompt, raw) -> int | bool | None:
    """Parse a raw answer to the question asked about `prompt`'s image (count or yes/no)."""
    if prompt.kind == "count":
        return parse_count(raw, prompt.obj)
    return parse_yes_no(raw, (prompt.obj, prompt.relation, prompt.obj_b))


def is_correct(prompt: Prompt, parsed) -> bool | None:
    """Whether a parsed answer matches the prompt (count equal / relation affirmed); None if unknown."""
    if parsed is None:
        return None
    if prompt.kind == "count":
        return parsed == prompt.count
    if prompt.kind == "spatial":
        return parsed is True
    raise ValueError(f"prompt {prompt.id}: unknown kind {prompt.kind!r}")


def answer_text(parsed: int | bool | None) -> str | None:
    """The parsed answer as stored in the ledger: '3', 'yes', 'no' or None."""
    if parsed is None:
        return None
    if isinstance(parsed, bool):
        return "yes" if parsed else "no"
    return str(parsed)
