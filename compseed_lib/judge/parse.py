"""Answer parsing: a judge's raw text -> the asked object's count or a yes/no verdict, or None (unknown).

A non-answer is *unknown*, never scored wrong (it is counted and reported). The parser knows the question:
which object a count question asks about, which objects and relation a yes/no question names. So:
- "There are 3 balls and 2 stars." asked about balls -> 3; about stars -> 2; about kites -> None;
- refusals ("No idea.", "There is no way to tell", "I can't determine that"), hedges ("about 3",
  "maybe", "at least 2", "a few"), ranges ("2 or 3", "3-4", "between 2 and 4"), negative or
  fractional numbers, and answers that never state a count give None;
- counts are read as digits, words (zero..ninety-nine), "a dozen" / "half a dozen", "a pair of",
  "a single ball" / "a ball", "none" / "no balls" / "zero";
- yes/no: read clause by clause — an answer particle ("Yes", "No"), an elliptical answer ("Definitely
  not", "It is"), an evaluation ("not true", "it is false that ..."), a closing "yes"/"no" ("I would say
  no"), a restatement of the relation or its converse ("the ball is not to the left of the star", "the
  star is on the right of the ball"), an absent object ("there is no ball"); every negation is placed on
  what it governs, and one that cannot be placed makes the answer unknown; conflicting verdicts give None;
- counts under a negation ("not 3", "there aren't three balls", "4 rather than 3") are never read as
  that number ("not three but four" -> 4; "there isn't a single ball" -> 0).
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
_CONTRASTS = {"instead", "rather", "but"}  # "4 instead of 3", "4 rather than 3", "4 but not 3"
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
        if t in _BOUNDARY or t == "," or t.isdigit() or t in UNITS or t in TENS or t in _CONTRASTS or \
                is_negator(t):
            break
        if _match(tokens, j, asked):
            return "asked"
        if _match(tokens, j, vocab):
            return "other"
    if end < len(tokens):
        t = tokens[end]
        if t not in _BOUNDARY and t not in _GENERIC and t != "," and not t.isdigit() and t not in _CONTRASTS \
                and not is_negator(t):
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


_NEGATORS = {"not", "never", "no", "none", "nothing", "neither", "nor", "nobody", "nowhere", "without", "nay"}


def is_negator(token: str) -> bool:
    """'not', 'never', 'no', 'none', 'nothing', 'neither', 'nor', 'without' and every "...n't"."""
    return token in _NEGATORS or token.endswith("n't") or token == "cannot"


_COUNT_CLAUSE = {*_BOUNDARY, ",", "but", "and", "while", "whereas", "although", "though", "however", "yet",
                 "whilst", "so"}


# Words that exclude what follows them, as a negation does: "anything but 3", "other than 3", "except 3",
# "apart from 3", "save 3", "excluding 3", "rather than 3", "instead of 3" (the word, and the one before it).
_EXCLUDING = {"except", "excluding", "excepting", "save", "besides", "barring"}
_EXCLUDING_AFTER = {"but": {"anything", "everything", "all", "any", "something", "whatever", "number"},
                    "than": {"other", "rather", "else", "different"}, "from": {"apart", "aside"},
                    "of": {"instead", "outside"}, "for": {"except", "save"}}


def _excludes(tokens: list[str], i: int) -> bool:
    """True when tokens[i] ends a word or pair of words that excludes what follows ("anything but", "other
    than", "except", "apart from", "instead of" ...)."""
    t = tokens[i] if i < len(tokens) else ""
    return t in _EXCLUDING or (i > 0 and tokens[i - 1] in _EXCLUDING_AFTER.get(t, ()))


def _negated_numbers(tokens: list[str]) -> set[int]:
    """Indices of the tokens that a negation governs, for counts: everything after a negation up to the
    end of its clause ("not 3", "there aren't three balls", "rather than 3", "instead of 3"), and a
    number whose clause is negated after it ("3 balls are not visible", but not "3, not 4"). Words that
    exclude ("anything but 3", "other than 3", "except 3", "apart from 3") govern as a negation does."""
    out, under, start = set(), False, 0
    for i, t in enumerate(tokens + ["."]):
        if t in _COUNT_CLAUSE and not _excludes(tokens, i):
            clause = range(start, i)
            # a verbal negation later in the clause with no number after it governs the clause
            verbal = [j for j in clause if tokens[j] not in ("no", "without", "none", "nothing") and
                      is_negator(tokens[j])]
            if verbal and not any(tokens[k].isdigit() or tokens[k] in UNITS or tokens[k] in TENS
                                  for k in range(verbal[-1] + 1, i)):
                out.update(range(start, verbal[-1]))
            under, start = False, i + 1
            continue
        if is_negator(t) or _excludes(tokens, i):
            under = True
        if under:
            out.add(i)
    return out


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
    negated = _negated_numbers(tokens)
    excluding = any(_excludes(tokens, i) for i in range(len(tokens)))
    none_of_asked = False  # "there isn't a single ball", "not a ball": a zero
    for start, end, n in _numbers(tokens, singular):
        kind = _counted(tokens, start, end, asked, vocab)
        if start in negated:  # "not 3", "there aren't three balls": never read as that number
            none_of_asked |= kind == "asked" and tokens[start] in ("a", "an", "single")
            continue
        kinds["free" if kind == "other" and obj is None else kind].add(n)  # no object asked: any noun will do
    if kinds["asked"]:
        return kinds["asked"].pop() if len(kinds["asked"]) == 1 else None
    if excluding and not kinds["free"]:
        return None  # "anything but 3", "apart from 3, nothing": what is excluded is not what is there
    if none_of_asked and not kinds["free"]:
        return 0
    if _zero_for(tokens, asked, mentions_asked):
        return 0 if not kinds["free"] or kinds["free"] == {0} else None
    if kinds["other"] and not mentions_asked:
        return None  # "There are 2 stars" when asked about balls: says nothing about balls
    if len(kinds["free"]) == 1:
        return kinds["free"].pop()
    return None


# ------------------------------------------------------------------ yes / no
# The reader works clause by clause and never lets a negation go unplaced. A clause is cut at
# punctuation and at conjunctions that open a new proposition ("and", "but", "because" ...); in each,
# a verdict comes from:
# - an answer particle opening it ("Yes", "No", "Nope"); it must agree with the rest of the clause
#   ("No, it isn't" is one "no": negative concord, not a double negation);
# - an elliptical answer made only of intensifiers, negations and function words ("Definitely not",
#   "Of course not", "It is", "Not at all"): yes, turned once by every negation in it;
# - a *core*: an evaluation ("true", "correct", "the case", "wrong", "that's right"), a closing
#   "yes"/"no" ("I would say no"), a restatement of the asked relation or its converse, or an asked
#   object declared absent. Every negation before the core in its clause turns it once ("it is not
#   true", "I don't think the ball is left of the star" -> no; "not incorrect" -> yes), and so does an
#   evaluation that governs it ("it is false that the ball is left of ..." -> no).
# Whenever a negation cannot be placed — it sits among content words it may govern ("the ball that
# is not red is left of ..."), it trails a verdict ("true, not"), or it negates an intensifier
# ("not definitely", "not exactly": a hedge) — the whole answer is unknown. Unknown is allowed; a
# verdict read as its opposite is not (tests/test_parse_properties.py checks thousands of phrasings).
PARTICLE_YES = {"yes", "yeah", "yep", "yup", "aye", "yea", "ya"}
PARTICLE_NO = {"no", "nope", "nah"}
_NO_PARTICLE_NEXT = {"it", "the", "that", "this", "they", "not", "its", "it's", "they're", "that's", "there",
                     "there's", "i", "i'd", "i'm", "definitely", "certainly", "absolutely", "never", "sir",
                     "way"}
INTENSIFIERS = {"definitely", "certainly", "absolutely", "indeed", "surely", "sure", "totally", "completely",
                "entirely", "clearly", "obviously", "undoubtedly", "positively", "truly", "actually",
                "really", "very", "quite", "exactly", "fully", "precisely", "necessarily", "always",
                "ofcourse", "nodoubt", "certain", "affirmatively", "unquestionably", "evidently", "plainly",
                "strictly", "wholly", "just", "simply", "most"}
_EVAL_POS = {"true", "correct", "accurate", "affirmative", "thecase", "accurately", "correctly"}
_EVAL_NEG = {"false", "incorrect", "inaccurate", "untrue", "wrong", "negative", "mistaken", "wrongly",
             "incorrectly", "falsely"}
YES_WORDS = PARTICLE_YES | _EVAL_POS | INTENSIFIERS  # words that can carry a "yes" (docs and tools)
NO_WORDS = PARTICLE_NO | _EVAL_NEG
_FUNCTION = {"it", "it's", "its", "is", "are", "they", "they're", "that", "that's", "this", "does", "do", "did",
             "so", "there", "there's", "i", "i'm", "am", "the", "answer", "my", "would", "say", "i'd", "atall",
             "be", "was", "were", "will", "has", "have", "he", "she", "he's", "she's", "statement", "claim",
             "a", "an", "to", "in", "fact", "of", "course", "one", "sir", "way", "s", "ever", "at", "all",
             "can", "confirm", "which", "what", "you", "you're", "said", "question"}
_VERBS = {"is", "are", "does", "do", "did", "was", "were", "it's", "that's", "they're", "there's", "am",
          "i'm", "he's", "she's", "will", "has", "have", "can"}
_RIGHT_FRAMES = ({"that's"}, {"that", "is"}, {"you're"}, {"you", "are"}, {"it's"}, {"it", "is"}, {"this", "is"},
                 {"that", "was"}, {"quite"}, {"that's", "quite"}, {"exactly"})
# The words allowed between a restated relation's subject and its phrase ("the ball is not directly
# to the left of"): anything else there may carry a negation that governs something other than the
# relation, so the restatement is not read.
_GAP = {"is", "are", "sits", "sit", "lies", "lie", "appears", "appear", "seems", "seem", "stands", "stand",
        "located", "positioned", "placed", "situated", "found", "to", "be", "does", "do", "did", "also",
        "still", "much", "far", "slightly", "directly", "just", "clearly", "definitely", "certainly",
        "indeed", "actually", "really", "in", "fact", "was", "were", "being", "visible", "shown", "drawn",
        "depicted", "somewhere", "well", "a", "bit", "little", "obviously", "exactly", "precisely", "entirely",
        "completely", "absolutely", "truly", "here", "there", "now", "always", "both", "it's", "its", "that's",
        "which", "that", "can", "seen", "image", "the", "of", "one", "side"}
# Words a negation may sit among before a core and still plainly govern it ("it is not the case that",
# "I don't think that", "there is no").
_GOVERNING = _FUNCTION | INTENSIFIERS | _GAP | {"think", "believe", "see", "shows", "show", "picture", "photo",
                                               "scene", "here", "would", "could", "should", "saying", "say",
                                               "claim", "agree", "looks", "look", "like", "as", "if", "though"}
_CLAUSE_SPLIT = re.compile(r"[.;:!?\n()\"—–,]+|\s-\s|\b(?:and|but|while|whereas|although|though|however|"
                           r"because|since|yet|except|otherwise|nevertheless|nonetheless|whilst)\b")
_CONTRAST = re.compile(r"\b(?:rather than|instead of|as opposed to|not as|in place of)\b")
_MULTIWORD = [(re.compile(r"\bof course\b"), "ofcourse"), (re.compile(r"\bno doubt\b"), "nodoubt"),
              (re.compile(r"\bwithout (?:a |any )?doubt\b"), "nodoubt"), (re.compile(r"\bbeyond doubt\b"), "nodoubt"),
              (re.compile(r"\bno question\b"), "nodoubt"), (re.compile(r"\bat all\b"), "atall"),
              (re.compile(r"\bthe case\b"), "thecase"), (re.compile(r"\bin fact\b"), "infact")]
INTENSIFIERS.add("infact")


_WEAK_YES = "weak yes"


class _Unknown(Exception):
    """A negation the reader cannot place: the answer is unknown."""


def _clauses(s: str) -> list[str]:
    """The answer cut into clauses; what follows 'rather than' / 'instead of' opens a negated clause."""
    for rx, word in _MULTIWORD:
        s = rx.sub(word, s)
    s = _CONTRAST.sub(" , not ", s)
    return [c.strip() for c in _CLAUSE_SPLIT.split(s) if c and c.strip()]


def _relation_words(relation):
    a, rel, b = relation
    a_words, _ = object_words(a)
    b_words, _ = object_words(b)
    return a_words, b_words, rel


def _relation_cores(tokens: list[str], relation) -> list[tuple[int, int, bool | None, int]]:
    """(start, end, holds, negations inside) of each restatement of the asked relation in a clause.

    holds: whether the stated relation is the asked one (its converse counts); None for a third relation
    ("above" when "left" was asked), which denies the asked one only when stated without a negation."""
    a_words, b_words, rel = _relation_words(relation)
    if not a_words or not b_words:
        return []
    phrases = sorted(((tuple(p.split()), r) for p, r in RELATION_SYNONYMS.items()), key=lambda x: -len(x[0]))
    out = []
    for i in range(len(tokens)):
        na, nb = _match(tokens, i, a_words), _match(tokens, i, b_words)
        if not (na or nb):
            continue
        x_is_a = bool(na)
        j = i + (na or nb)
        negs = 0
        while j < len(tokens):
            hit = next(((p, r) for p, r in phrases if tuple(tokens[j:j + len(p)]) == p), None)
            if hit:
                break
            t = tokens[j]
            if is_negator(t):
                negs += 1
            elif t not in _GAP:
                hit = None
                break
            j += 1
        else:
            hit = None
        if not hit:
            continue
        phrase, said = hit
        k = j + len(phrase)
        while k < len(tokens) and tokens[k] in ("the", "a", "an", "other", "one") and k - (j + len(phrase)) < 3:
            k += 1
        # up to two adjectives before the other object ("left of the red star")
        for skip in range(0, 3):
            ma, mb = _match(tokens, k + skip, a_words), _match(tokens, k + skip, b_words)
            if (ma and not x_is_a) or (mb and x_is_a):
                end = k + skip + (ma or mb)
                if not x_is_a:
                    said = OPPOSITE[said]
                holds = said == rel if said in (rel, OPPOSITE[rel]) else None
                out.append((i, end, holds, negs))
                break
            if k + skip >= len(tokens) or tokens[k + skip] in _BOUNDARY or _match(tokens, k + skip, _vocabulary()):
                break
    return out


def _absence_cores(tokens: list[str], relation) -> list[tuple[int, int]]:
    """(start, end) of each statement that an asked object is absent ('there is no star', 'the ball is
    not visible', 'I don't see a star', 'without a ball'); the negation is part of the statement."""
    a_words, b_words, _ = _relation_words(relation)
    either = tuple(sorted({*a_words, *b_words}, key=len, reverse=True))
    if not either:
        return []
    out = []
    for i, t in enumerate(tokens):
        neg_at = next((j for j in range(i - 1, max(-1, i - 3), -1) if is_negator(tokens[j])), None)
        if t in ("no", "without") or (t in ("any", "a", "an", "one") and neg_at is not None and
                                      all(u in _SEE for u in tokens[neg_at + 1:i])):
            for skip in range(1, 3):  # "no star", "no red star", "I don't see any star", "isn't a star"
                n = _match(tokens, i + skip, either)
                if n:
                    out.append((i if t in ("no", "without") else neg_at, i + skip + n))
                    break
        n = _match(tokens, i, either)
        if n:  # "the ball is not visible", "the star isn't in the image"
            rest = tokens[i + n:i + n + 4]
            if rest[:1] in (["is"], ["are"]):
                rest = rest[1:]
            if rest and is_negator(rest[0]) and rest[0] not in ("no", "without") and len(rest) > 1 and \
                    rest[1] in _PRESENT:
                out.append((i, len(tokens)))
    return out


_SEE = {"see", "find", "spot", "notice", "observe", "detect", "have", "contain", "show", "shows", "is", "are",
        "there", "any", "a", "an"}
_PRESENT = {"present", "visible", "shown", "there", "depicted", "in", "seen", "anywhere", "drawn", "included"}


def _governed(prefix: list[str]) -> int:
    """The number of negations in the tokens before a core; unknown when a negation there sits among
    content words it may govern instead."""
    negs = sum(1 for t in prefix if is_negator(t))
    if negs and any(t not in _GOVERNING and not is_negator(t) and t not in _EVAL_POS | _EVAL_NEG for t in prefix):
        raise _Unknown
    return negs


def _clause_verdicts(clause: str, relation, infer: bool = True) -> list:
    """The verdicts one clause states (True / False, or _WEAK_YES for a bare intensifier); raises
    _Unknown for a negation it cannot place. With no relation asked and `infer`, a clause that states a
    relation is read as a restatement of the asked one."""
    tokens = [t for t in _TOKEN.findall(clause) if t not in _BOUNDARY and t != ","]
    out: list = []
    while tokens and (tokens[0] in PARTICLE_YES or tokens[0] in ("nope", "nah") or
                      (tokens[0] == "no" and (len(tokens) == 1 or tokens[1] in _NO_PARTICLE_NEXT or
                                              tokens[1] in _EVAL_POS | _EVAL_NEG | INTENSIFIERS | PARTICLE_YES |
                                              PARTICLE_NO))):
        out.append(tokens[0] in PARTICLE_YES)
        tokens = tokens[1:]
    if not tokens:
        return out
    for t, u in zip(tokens, tokens[1:]):
        if is_negator(t) and u in INTENSIFIERS:
            raise _Unknown  # "not definitely", "isn't exactly": a hedge
    stated = _stated_relation(tokens) if relation is None and infer else None
    if stated is not None:  # no relation asked: a clause that states one is read as restating it (parse_yes_no)
        return _clause_verdicts(clause, stated)
    if all(t in _FUNCTION or t in INTENSIFIERS or is_negator(t) for t in tokens):
        if any(t in _VERBS or is_negator(t) for t in tokens):
            out.append(sum(map(is_negator, tokens)) % 2 == 0)  # "Definitely not", "It is", "Not at all"
        elif any(t in INTENSIFIERS for t in tokens):
            out.append(_WEAK_YES)  # "Absolutely." alone is a yes; before a statement it only stresses it
        return out
    # cores: (start, end, base verdict, negations inside, kind: "eval", "relation" or "absent")
    cores: list[tuple[int, int, bool | None, int, str]] = []
    if relation is not None:
        cores += [(s, e, h, n, "relation") for s, e, h, n in _relation_cores(tokens, relation)]
        cores += [(s, e, False, 0, "absent") for s, e in _absence_cores(tokens, relation)
                  if not any(s <= c[0] < e or c[0] <= s < c[1] for c in cores)]
    for i, t in enumerate(tokens):
        if any(s <= i < e for s, e, *_ in cores):
            continue
        if t in _EVAL_POS or t in _EVAL_NEG:
            cores.append((i, i + 1, t in _EVAL_POS, 0, "eval"))
        elif t == "right" and i == len(tokens) - 1 and \
                {u for u in tokens[:i] if not is_negator(u) and u not in INTENSIFIERS} in _RIGHT_FRAMES:
            cores.append((i, i + 1, True, 0, "eval"))
        elif t in ("yes", "no") and i == len(tokens) - 1 and i > 0:
            cores.append((i, i + 1, t == "yes", 0, "eval"))  # "I would say no", "the answer is yes"
    if not cores:
        return out
    cores.sort()
    sign, prev = 0, 0  # sign: negations and "false that"-operators so far (odd: turned)
    for n, (start, end, base, inner, kind) in enumerate(cores):
        outer = _governed(tokens[prev:start]) + sign
        prev = end
        if kind == "eval" and n + 1 < len(cores):  # an evaluation governing a later core: "it is not true that"
            sign = outer + (0 if base else 1)
            continue
        if kind == "absent":
            if outer % 2 == 0:  # "it's not true that there is no star" says nothing of the relation
                out.append(False)
        elif base is None:  # a third relation: "the ball is above the star" denies "left of"
            if (outer + inner) % 2 == 0:
                out.append(False)
        else:
            out.append(base != ((outer + inner) % 2 == 1))
    tail = tokens[cores[-1][1]:]
    if any(is_negator(t) for t in tail) and all(t in _GOVERNING or is_negator(t) for t in tail):
        raise _Unknown  # "true, not" / "the ball is left of the star not": a trailing negation
    if any(is_negator(t) for t in tail):
        raise _Unknown  # "it is true that it is not left of the banana": a negation no core placed
    return out


def _stated_relation(tokens: list[str]) -> tuple[str, str, str] | None:
    """(word before, relation, word after) of the first relation phrase in `tokens` ("the apple is not left
    of the banana" -> ('apple', 'left', 'banana')), skipping the words a restatement allows between them;
    None when there is none."""
    phrases = sorted(((tuple(p.split()), r) for p, r in RELATION_SYNONYMS.items()), key=lambda x: -len(x[0]))
    for j in range(len(tokens)):
        hit = next(((ph, r) for ph, r in phrases if tuple(tokens[j:j + len(ph)]) == ph), None)
        if not hit:
            continue
        i = j - 1
        while i >= 0 and (tokens[i] in _GAP or is_negator(tokens[i])) and tokens[i] not in ("it", "it's", "its"):
            i -= 1
        k = j + len(hit[0])
        while k < len(tokens) and tokens[k] in ("the", "a", "an"):
            k += 1
        if i >= 0 and k < len(tokens) and tokens[i].isalpha() and tokens[k].isalpha():
            return tokens[i], hit[1], tokens[k]
        return None
    return None


def parse_yes_no(text, relation: tuple[Obj | str, str, Obj | str] | None = None) -> bool | None:
    """True/False from a yes/no answer; None for refusals, hedges, contradictions, negations that cannot
    be placed and non-answers — never the opposite verdict.

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
    read = _verdict(s, relation)
    if relation is not None:
        return read
    # No relation asked. A clause that states one is read as restating the asked relation, so that its
    # negations are placed ("it is the case that the apple is not left of the banana" is a no). Read without
    # that, the answer may differ only where a particle meets another relation plainly stated ("No, the ball
    # is right of the star": the particle's verdict, and the relation that holds instead).
    plain = _verdict(s, None, infer=False)
    if read == plain or plain is None:
        return read
    rest = _tokens(s)
    while rest and (rest[0] in PARTICLE_YES | PARTICLE_NO or rest[0] == ","):
        rest = rest[1:]
    return plain if not any(map(is_negator, rest)) else None


def _verdict(s: str, relation, infer: bool = True) -> bool | None:
    """The one verdict of every clause of a normalised answer, or None (none, several, or unplaceable)."""
    verdicts: list = []
    try:
        for clause in _clauses(s):
            verdicts += _clause_verdicts(clause, relation, infer)
    except _Unknown:
        return None
    strong = [v for v in verdicts if v is not _WEAK_YES]
    verdicts = strong or [True for _ in verdicts]
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
