"""Answer parsing against a table of judge phrasings: counts of the asked object, yes/no verdicts,
and unknown (None) for refusals, hedges, ranges and non-answers — never a count or a 'no'."""
import pytest

from compseed_lib import prompts
from compseed_lib.judge import parse_answer, parse_count, parse_yes_no
from compseed_lib.prompts import Obj

BALL = Obj("ball", "a ball", "balls")
STAR = Obj("star", "a star", "stars")
BOX = Obj("box", "a box", "boxes")
KNIFE = Obj("knife", "a knife", "knives")
FISH = Obj("fish", "a fish", "fish")
TENT = Obj("tent", "a tent", "tents")
COTTAGE = Obj("cottage", "a house", "cottages")
TEDDY = Obj("teddy bear", "a teddy bear", "teddy bears")

COUNTS = [
    # plain answers
    ("3", BALL, 3), ("3.", BALL, 3), ("three", BALL, 3), ("Three.", BALL, 3), (" 4 ", BALL, 4),
    ("There are 3 balls.", BALL, 3), ("There are three balls in the image.", BALL, 3),
    ("I count 5 balls.", BALL, 5), ("I can see five balls.", BALL, 5), ("The image shows 2 red balls.", BALL, 2),
    ("There are 6 small red balls on the sand.", BALL, 6), ("Answer: 4", BALL, 4), ("**4**", BALL, 4),
    ("The number of balls in this image is 3.", BALL, 3), ("balls: 3", BALL, 3), ("Count: 2", BALL, 2),
    ("There are 3.", BALL, 3), ("3 in total.", BALL, 3), ("A total of 5 balls are visible.", BALL, 5),
    ("I see 12 balls.", BALL, 12), ("12", BALL, 12), ("twelve", BALL, 12), ("twenty-one", BALL, 21),
    ("There are twenty one balls.", BALL, 21), ("30", BALL, 30),
    ('{"answer": "3"}', BALL, 3), ('{"answer": 3}', BALL, 3), ('```json\n{"answer": "two"}\n```', BALL, 2),
    ('{"count": 4}', BALL, 4),
    # dozens, pairs, singles
    ("a dozen", BALL, 12), ("There are a dozen balls.", BALL, 12), ("one dozen", BALL, 12),
    ("half a dozen balls", BALL, 6), ("two dozen balls", BALL, 24), ("a pair of balls", BALL, 2),
    ("There is a single ball.", BALL, 1), ("There is one ball.", BALL, 1), ("There is a ball.", BALL, 1),
    ("Only one ball is visible.", BALL, 1), ("There is just a red ball in the image.", BALL, 1),
    # zero
    ("0", BALL, 0), ("zero", BALL, 0), ("None.", BALL, 0), ("There are no balls.", BALL, 0),
    ("No balls are visible in the image.", BALL, 0), ("There aren't any balls.", BALL, 0),
    ("I don't see any balls in this image.", BALL, 0), ("Zero balls.", BALL, 0), ("Nothing.", BALL, 0),
    ("No objects are visible.", BALL, 0),
    # the asked object among others
    ("There are 3 balls and 2 stars.", BALL, 3), ("There are 3 balls and 2 stars.", STAR, 2),
    ("2 stars and 4 balls", BALL, 4), ("Balls: 3, stars: 2", BALL, 3), ("Balls: 3, stars: 2", STAR, 2),
    ("I see 3 balls, 3 stars and a box.", BALL, 3), ("I see 3 balls, 3 stars and a box.", BOX, 1),
    ("There are 4 boxes and one star.", BOX, 4), ("There are 2 knives.", KNIFE, 2),
    ("There are 5 fish in the water.", FISH, 5), ("There are 3 tents.", TENT, 3),
    ("There are 3 houses.", COTTAGE, 3), ("I count 2 teddy bears.", TEDDY, 2),
    ("There are 3 balls, one of which is partly hidden.", BALL, 3),
    # unknown: the answer names only other objects
    ("There are 2 stars.", BALL, None), ("I see 3 stars and 2 boxes.", BALL, None),
    ("There are 3 cats.", BALL, None), ("There are 4 tents.", STAR, None),
    # unknown: refusals and non-answers
    ("No idea.", BALL, None), ("There is no way to tell.", BALL, None), ("I can't tell.", BALL, None),
    ("I cannot determine the number of balls.", BALL, None), ("Sorry, I can't help with that.", BALL, None),
    ("I'm not sure.", BALL, None), ("It is unclear from the image.", BALL, None), ("", BALL, None),
    ("The image is too blurry to count the balls.", BALL, None), ("Hard to say.", BALL, None),
    ("The balls are red.", BALL, None), ("Yes.", BALL, None), ("No.", BALL, None), ("N/A", BALL, None),
    ("I'm unable to count them.", BALL, None), ("It is impossible to count them accurately.", BALL, None),
    # unknown: hedges, ranges, bounds
    ("about 3", BALL, None), ("around four balls", BALL, None), ("approximately 5", BALL, None),
    ("Maybe 3.", BALL, None), ("Probably 4 balls.", BALL, None), ("at least 2", BALL, None),
    ("more than 3 balls", BALL, None), ("2 or 3", BALL, None), ("3-4", BALL, None), ("3 to 4 balls", BALL, None),
    ("between 2 and 4", BALL, None), ("two or three balls", BALL, None), ("a few balls", BALL, None),
    ("several balls", BALL, None), ("many balls", BALL, None), ("There are some balls.", BALL, None),
    ("a couple of balls", BALL, None), ("3 or more", BALL, None), ("roughly 6", BALL, None),
    ("I'd guess 4.", BALL, None), ("It could be 3.", BALL, None),
    # unknown: invalid numbers
    ("-3", BALL, None), ("minus three", BALL, None), ("2.5", BALL, None), ("2.5 balls", BALL, None),
    ("There are 3 balls and 4 balls.", BALL, None),
]


@pytest.mark.parametrize("text,obj,expected", COUNTS)
def test_parse_count_table(text, obj, expected):
    assert parse_count(text, obj) == expected


def test_parse_count_without_object():
    assert parse_count("There are 3.") == 3
    assert parse_count("No idea.") is None
    assert parse_count("one dozen") == 12
    assert parse_count("-3") is None
    assert parse_count(3) == 3 and parse_count(-3) is None and parse_count(True) is None


REL = (BALL, "left", STAR)
YES_NO = [
    ("yes", REL, True), ("Yes.", REL, True), ("YES", REL, True), ("no", REL, False), ("No.", REL, False),
    ("Yes, the ball is on the left of the star.", REL, True), ("Yes, it is.", REL, True),
    ("No, it is on the right.", REL, False), ("No, the ball is to the right of the star.", REL, False),
    ("Correct.", REL, True), ("That's right.", REL, True), ("Incorrect.", REL, False), ("Nope.", REL, False),
    ("Yeah", REL, True), ("Absolutely.", REL, True), ("Definitely yes.", REL, True), ("Not at all.", REL, False),
    ('{"answer": "yes"}', REL, True), ('{"answer": "no"}', REL, False), ('{"answer": true}', REL, True),
    ("The ball is on the left of the star.", REL, True), ("The ball is to the left of the star.", REL, True),
    ("The ball is left of the star.", REL, True), ("The star is on the right of the ball.", REL, True),
    ("The star is to the right of the ball.", REL, True), ("The ball is not on the left of the star.", REL, False),
    ("The ball is on the right of the star.", REL, False), ("The star is left of the ball.", REL, False),
    ("The ball is above the star.", REL, False), ("There is no star in the image.", REL, False),
    ("There is no ball.", REL, False), ("No ball is visible.", REL, False), ("The ball is not visible.", REL, False),
    ("Yes, there is no doubt.", REL, True),
    ((BALL, "above", STAR) and "The ball is on top of the star.", (BALL, "above", STAR), True),
    ("The ball is under the star.", (BALL, "above", STAR), False),
    ("The star is below the ball.", (BALL, "above", STAR), True),
    ("The box is beneath the ball.", (BOX, "below", BALL), True),
    # unknown
    ("No idea.", REL, None), ("I don't know.", REL, None), ("There is no way to tell.", REL, None),
    ("I cannot determine that from the image.", REL, None), ("Maybe.", REL, None), ("Possibly.", REL, None),
    ("Probably yes.", REL, None), ("Yes and no.", REL, None), ("It depends on the viewpoint.", REL, None),
    ("Partially.", REL, None), ("Sort of.", REL, None), ("", REL, None),
    ("The image shows a ball and a star.", REL, None),
    ("Yes, the ball is on the right of the star.", REL, None), ("No, the ball is on the left of the star.", REL, None),
    ("Sorry, I can't answer that.", REL, None), ("3", REL, None), ("It's hard to say.", REL, None),
    ("Not really.", REL, None), ("unclear", REL, None),
]


@pytest.mark.parametrize("text,relation,expected", YES_NO)
def test_parse_yes_no_table(text, relation, expected):
    assert parse_yes_no(text, relation) is expected


def test_parse_answer_uses_the_prompts_object():
    ps = prompts.load("miniworld", "train")
    count = next(p for p in ps if p.kind == "count" and p.obj.name == "ball")
    spatial = next(p for p in ps if p.kind == "spatial")
    other = next(o for o in ("star", "box", "kite", "tent") if o != count.obj.name)
    assert parse_answer(count, f"There are 2 {other}s and 5 {count.obj.plural}.") == 5
    assert parse_answer(count, f"There are 2 {other}s.") is None
    b = spatial.obj_b.name
    assert parse_answer(spatial, f"There is no {b} in the image.") is False
    assert parse_answer(spatial, "No idea.") is None


def test_every_template_count_round_trips():
    """The answer '<count word> <plural>' parses to that count for every object of both worlds."""
    for world in prompts.WORLDS:
        for split in prompts.SPLITS:
            for p in prompts.numerical_prompts(world, split, counts=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)):
                word = p.text.split(",")[0]
                assert parse_answer(p, f"There are {word}.") == p.count, p.text
                assert parse_answer(p, f"{p.count}") == p.count
