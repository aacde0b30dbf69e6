"""Property tests of the answer reader over generated corpora: a verdict is never read as its opposite
and a negated number is never read as that number.

Each statement is built from parts (an answer particle, an intensifier, a verdict, a negation, a
restatement of the relation in the asked order or as its converse, an evaluation governing it,
punctuation, case), and the truth the parts encode is computed from them, not from the parser. An
answer may come back unknown (None); it must never come back as the opposite. So that the test can
fail in both directions, it also asks that most statements are read (unknown is not a free pass).
"""
from __future__ import annotations

import itertools

import pandas as pd
import pytest

from compseed_lib.judge import parse_count, parse_yes_no
from compseed_lib.prompts import OPPOSITE, RELATION_SYNONYMS, Obj

BALL = Obj("ball", "a ball", "balls")
STAR = Obj("star", "a star", "stars")
TEDDY = Obj("teddy bear", "a teddy bear", "teddy bears")
BOX = Obj("box", "a box", "boxes")
ASKED = [(BALL, "left", STAR), (TEDDY, "above", BOX), (STAR, "right", BALL), (BOX, "below", TEDDY)]

INTENSIFIERS = ["", "definitely", "certainly", "absolutely", "clearly", "surely", "of course", "indeed", "really"]
# (words between subject and relation phrase, negations in them)
COPULAS = [("is", 0), ("is not", 1), ("isn't", 1), ("is definitely not", 1), ("is clearly", 0),
           ("does not appear to be", 1), ("doesn't seem to be", 1), ("appears to be", 0), ("is never", 1),
           ("is certainly not", 1), ("is indeed", 0), ("sits", 0)]
PARTICLES = [("", None), ("Yes, ", True), ("No, ", False), ("Yes ", True), ("No ", False), ("Nope, ", False),
             ("Yeah, ", True), ("Absolutely, ", "weak"), ("Definitely, ", "weak")]
PUNCT = ["", ".", "!", " .", "..."]
EVALS = [("true", True), ("false", False), ("correct", True), ("incorrect", False), ("the case", True),
         ("wrong", False), ("accurate", True)]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _noun(obj: Obj) -> str:
    return obj.name


def _restatements(asked):
    """(text, truth) for each restatement of a relation between the asked objects."""
    a, rel, b = asked
    for phrase, said in RELATION_SYNONYMS.items():
        if said not in (rel, OPPOSITE[rel]):
            continue
        for converse in (False, True):
            x, y = (b, a) if converse else (a, b)
            holds = (said == rel) != converse
            for copula, negs in COPULAS:
                yield f"the {_noun(x)} {copula} {phrase} the {_noun(y)}", holds != bool(negs % 2)


def _combine(particle, body: str, truth: bool):
    """A particle before a body: agreeing -> the truth; disagreeing -> a contradiction (must be None)."""
    text, said = particle
    if said is None or said == "weak":
        return text + (body if said is None else body), truth
    return text + body, truth if said == truth else None


def yes_no_corpus():
    """(text, relation, truth or None for contradictions) built from parts."""
    out = []
    for n, asked in enumerate(ASKED):
        a, rel, b = asked
        bodies = list(_restatements(asked))[n % 2::2]  # every other phrasing, alternating between relations
        # evaluations governing a restatement: "it is (not) true that <restatement>"
        for (ev, ev_truth), neg in itertools.product(EVALS[:4], ["", "not "]):
            for body, truth in bodies[::7]:
                outer = ev_truth != bool(neg)
                bodies.append((f"it is {neg}{ev} that {body}", truth == outer))
        bodies += [(f"there is no {_noun(b)}", False), (f"i don't see a {_noun(a)}", False),
                   (f"the {_noun(a)} is not visible", False)]
        for (body, truth), particle, punct in itertools.product(bodies, PARTICLES, PUNCT[:2]):
            text, t = _combine(particle, body, truth)
            out.append((_cap(text) + punct, asked, t))
    # answers that need no relation: intensifier + (negation) alone, evaluations, closing particles
    for asked in ASKED[:1]:
        for intens, neg, punct in itertools.product(INTENSIFIERS, ["", "not"], PUNCT):
            if not intens and not neg:
                continue
            if intens == "really" and neg:
                continue  # "really not" is a hedge in English usage as well; skipped, not asserted
            text = " ".join(w for w in (intens, neg) if w)
            out.append((_cap(text) + punct, asked, not neg))
            for particle in PARTICLES[:7]:
                if particle[1] is not None and not neg:  # "No, definitely": the intensifier stresses the particle
                    out.append((particle[0] + text + punct, asked, particle[1]))
                    continue
                t, truth = _combine(particle, text, not neg)
                out.append((_cap(t) + punct, asked, truth))
        for intens, neg, (ev, ev_truth), frame in itertools.product(
                INTENSIFIERS, ["", "not "], EVALS, ["it is ", "that's ", "", "this is "]):
            intens = f"{intens} " if intens else ""
            truth = ev_truth != bool(neg)
            for text in (f"{frame}{intens}{neg}{ev}", f"{frame}{neg}{ev}"):
                out.append((_cap(text) + ".", asked, truth))
                for particle in PARTICLES[1:5]:
                    t, tr = _combine(particle, text, truth)
                    out.append((_cap(t), asked, tr))
        for neg, word, frame in itertools.product(["", "not "], ["yes", "no"],
                                                  ["i would {neg}say ", "the answer is {neg}", "my answer is {neg}"]):
            if neg and frame.startswith("i would"):
                frame = "i would {neg}say "
            text = frame.format(neg=neg) + word
            out.append((_cap(text) + ".", asked, (word == "yes") != bool(neg)))
        for neg in ["isn't", "is not", "is"]:
            text = f"it {neg}"
            for particle in PARTICLES[1:5]:
                t, tr = _combine(particle, text, neg == "is")
                out.append((_cap(t) + ".", asked, tr))
    return out


CORPUS = yes_no_corpus()

# Frames that affirm the statement they introduce, and frames that deny it: the statement's own negation must
# still turn the verdict inside them, with the relation asked and without it.
AFFIRMING = ["it is the case that", "it is true that", "what i see is that", "it is correct that",
             "i can confirm that", "the truth is that", "it's accurate that", "it is clear that",
             "i can see that", "the image shows that"]
DENYING = ["it is not the case that", "it is not true that", "it is false that", "it's incorrect that"]


def framed_corpus():
    """(text, asked relation, truth): a restatement of the asked relation or its converse, negated or not,
    inside an affirming or a denying frame."""
    out = []
    for asked in ASKED:
        a, rel, b = asked
        for phrase, said in RELATION_SYNONYMS.items():
            if said != rel:
                continue
            for converse, (copula, negs) in itertools.product((False, True), COPULAS):
                x, y = (b, a) if converse else (a, b)
                phrase_c = next(p for p, s in RELATION_SYNONYMS.items() if s == OPPOSITE[rel]) if converse else phrase
                body = f"the {_noun(x)} {copula} {phrase_c} the {_noun(y)}"
                holds = not negs % 2
                for frame, punct in itertools.product(AFFIRMING, PUNCT[:2]):
                    out.append((_cap(f"{frame} {body}") + punct, asked, holds))
                for frame in DENYING:
                    out.append((_cap(f"{frame} {body}") + ".", asked, not holds))
    return out


FRAMED = framed_corpus()


def test_framed_statements_keep_their_negation_with_and_without_the_relation():
    """'It is the case that the apple is not left of the banana' is a no, the relation asked or not."""
    assert len(FRAMED) >= 3000, len(FRAMED)
    assert sum(t for *_, t in FRAMED) > 1000 and sum(not t for *_, t in FRAMED) > 1000
    for with_relation in (True, False):
        flips, read = [], 0
        for text, asked, truth in FRAMED:
            got = parse_yes_no(text, asked if with_relation else None)
            read += got is not None
            if got is not None and got != truth:
                flips.append((text, truth, got))
        assert not flips, f"relation given: {with_relation}: {len(flips)} read as their opposite, e.g. {flips[:8]}"
        assert read >= 0.85 * len(FRAMED), f"relation given: {with_relation}: only {read}/{len(FRAMED)} read"


def test_yes_no_corpus_is_large_and_balanced():
    assert len(CORPUS) >= 3000, len(CORPUS)
    truths = [t for _, _, t in CORPUS]
    assert truths.count(True) > 500 and truths.count(False) > 500 and truths.count(None) > 100


def test_no_verdict_is_read_as_its_opposite():
    flips, known, contradictions_read = [], 0, []
    for text, relation, truth in CORPUS:
        got = parse_yes_no(text, relation)
        if truth is None:
            if got is not None:
                contradictions_read.append((text, got))
            continue
        if got is not None:
            known += 1
            if got != truth:
                flips.append((text, truth, got))
    assert not flips, f"{len(flips)} verdicts read as their opposite, e.g. {flips[:10]}"
    assert not contradictions_read, f"contradictions read as a verdict: {contradictions_read[:10]}"
    decided = sum(1 for *_, t in CORPUS if t is not None)
    assert known / decided >= 0.85, f"only {known}/{decided} statements read: the reader says unknown too often"


@pytest.mark.parametrize("text,truth", [
    ("Definitely not", False), ("Absolutely not!", False), ("Certainly not.", False), ("Of course not", False),
    ("Surely not", False), ("Indeed not.", False), ("Not at all true", False), ("Nope, definitely not", False),
    ("It's not the case that the ball is left of the star", False), ("I wouldn't say no.", True),
    ("The ball is definitely not to the left of the star.", False), ("not incorrect", True),
    ("It is false that the star is on the right of the ball.", False),
    ("The ball is right of the star rather than left of it.", False),
])
def test_named_negations(text, truth):
    assert parse_yes_no(text, (BALL, "left", STAR)) is truth
    if "ball" not in text:
        assert parse_yes_no(text) is truth


@pytest.mark.parametrize("text", [
    "The ball that is not red is left of the star.",  # the negation governs "red", not the relation
    "Not definitely.", "It isn't exactly true.", "True, not.", "Not necessarily.",
    "It's not true that there is no star.",  # the star is there: says nothing of the relation
])
def test_negations_it_cannot_place_are_unknown(text):
    assert parse_yes_no(text, (BALL, "left", STAR)) is None


NUM_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]


def count_corpus():
    """(text, object, negated number, the number the text affirms or None)."""
    out = []
    templates = [
        ("not {n}", None), ("Not {n}.", None), ("There are not {n} {obj}.", None), ("There aren't {n} {obj}.", None),
        ("I do not count {n} {obj}.", None), ("It's not {n}.", None), ("The answer is not {n}.", None),
        ("{n} {obj} are not visible.", None), ("Never {n}.", None),
        ("Not {n} but {m}.", "m"), ("not {n} but {m} {obj}", "m"), ("{m}, not {n}.", "m"), ("{m} {obj}, not {n}.", "m"),
        ("There are {m} {obj}, not {n}.", "m"), ("There aren't {n} {obj}; there are {m}.", "m"),
        ("It's not {n}, it's {m}.", "m"), ("{m} rather than {n}", "m"), ("{m} {obj} instead of {n}", "m"),
        ("I count {m} {obj} and not {n}.", "m"), ("{m} not {n}", "m"), ("Not {n} {obj}: {m} {obj}.", "m"),
        ("There are {m} {obj} rather than {n} {obj}.", "m"), ("Definitely not {n}; {m}.", "m"),
        ("The number of {obj} is not {n} but {m}.", "m"),
        # words that exclude a number, as a negation does
        ("anything but {n}", None), ("Anything but {n}.", None), ("Anything other than {n}.", None),
        ("Something other than {n} {obj}.", None), ("Except {n}.", None), ("Everything except {n} {obj}.", None),
        ("Apart from {n}, nothing.", None), ("Save {n}.", None), ("Excluding {n}.", None),
        ("Any number but {n}.", None), ("Aside from {n} {obj}, none.", None), ("Whatever but {n}.", None),
        ("{m}; anything but {n}.", "m"), ("{m} {obj}, anything other than {n}.", "m"),
        ("There are {m} {obj}: anything but {n}.", "m"), ("{m}, something other than {n}.", "m"),
    ]
    for obj in (BALL, TEDDY):
        for n, m in itertools.product((1, 2, 3, 4, 5, 7, 9, 12), (0, 1, 2, 3, 4, 6, 8, 11)):
            if n == m:
                continue
            for (tmpl, affirms), as_word_n, as_word_m in itertools.product(templates, (False, True), (False, True)):
                ns = NUM_WORDS[n] if as_word_n else str(n)
                ms = NUM_WORDS[m] if as_word_m else str(m)
                text = tmpl.format(n=ns, m=ms, obj=obj.plural)
                out.append((text, obj, n, m if affirms else None))
    return out


COUNTS = count_corpus()


def test_no_negated_number_is_read_as_that_number():
    assert len(COUNTS) >= 3000
    wrong, read = [], 0
    for text, obj, negated, affirmed in COUNTS:
        for asked in (obj, None):
            got = parse_count(text, asked)
            if got == negated or (got is not None and got != affirmed):
                wrong.append((text, asked and asked.name, got))
            read += got is not None
    assert not wrong, f"{len(wrong)} misreadings, e.g. {wrong[:10]}"
    affirmed = sum(2 for *_, a in COUNTS if a is not None)
    assert read >= 0.85 * affirmed, f"only {read} of {affirmed} affirmed counts read"


@pytest.mark.parametrize("text,expected", [
    ("There isn't a single ball.", 0), ("Not a single ball is visible.", 0), ("There is not one ball but two.", 2),
    ("not three but four", 4), ("There are 3 balls with no stars.", 3), ("No, 3 balls.", 3),
    ("anything but 3", None), ("Anything other than three balls.", None), ("Apart from 3, nothing.", None),
    ("Four balls, anything but three.", 4),
])
def test_named_negated_counts(text, expected):
    assert parse_count(text, BALL) == expected
    if "ball" not in text.lower():  # no object named: the same reading with no object asked
        assert parse_count(text) == expected


def test_rejudge_finds_and_applies_readings_that_change(tmp_path, capsys):
    """`compseed rejudge` re-reads stored raw answers: a 'Definitely not' stored as a yes (the old
    reading) is reported and, with --apply, corrected in the ledger; canonical answers do not change."""
    from compseed_lib import prompts as P
    from compseed_lib.cli import main
    from compseed_lib.config import config_from_dict
    from compseed_lib.judge import question_for
    from compseed_lib.store import Run

    run = Run.create(config_from_dict({"runs_dir": str(tmp_path), "name": "r"}))
    ps = P.load("miniworld", "train")
    spatial = next(p for p in ps if p.kind == "spatial")
    count = next(p for p in ps if p.kind == "count")
    row = lambda p, seed, raw, parsed, ok: dict(stage="base", prompt_id=p.id, seed=seed, judge_model="m",
                                                question=question_for(p), image_sha256="x", raw_answer=raw,
                                                parsed_answer=parsed, correct=ok)
    run.ledger.add_judgements([row(spatial, 0, "yes", "yes", 1), row(spatial, 1, "Definitely not", "yes", 1),
                               row(count, 0, str(count.count), str(count.count), 1),
                               row(count, 1, f"Not {count.count}.", str(count.count), 1)])
    assert main(["rejudge", str(run.root)]) == 0
    out = capsys.readouterr().out
    assert "4 stored answers" in out and "2 readings change, 1 correct<->wrong, 1 now unknown" in out
    assert main(["rejudge", str(run.root), "--apply"]) == 0
    j = run.ledger.query("SELECT * FROM judgements").set_index(["prompt_id", "seed"])
    assert j.loc[(spatial.id, 1), "parsed_answer"] == "no" and j.loc[(spatial.id, 1), "correct"] == 0
    assert pd.isna(j.loc[(count.id, 1), "parsed_answer"]) and j.loc[(spatial.id, 0), "correct"] == 1
    capsys.readouterr()
    assert main(["rejudge", str(run.root)]) == 0
    assert "0 readings change" in capsys.readouterr().out
    assert main(["rejudge", str(tmp_path / "missing")]) == 2
