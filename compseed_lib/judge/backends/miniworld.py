"""The exact mini-world judge as a judge backend: counts and relations read off the image by the
mini world's classical judge (colour segmentation), questions parsed with `judge.templates`.

Usage:
    judge = MiniworldJudge()
    judge.answer("Is the ball on the left of the star? Answer yes or no.", image)   # 'yes' / 'no'
    judge.answer(detect_question(["ball", "star"]), image)   # '{"width": 64, ..., "objects": [...]}'
"""
from __future__ import annotations

from PIL import Image

from ... import prompts as P
from ..detections import Detection, detections_answer
from ..templates import parse_question

MODEL_ID = "miniworld-exact"
REFUSAL = "I cannot answer that question."


def known_objects() -> dict[str, str]:
    """Plural, name and singular (with and without article) -> object kind, from the mini-world files."""
    names: dict[str, str] = {}
    for o in P.world_objects("miniworld"):
        for word in (o.name, o.plural, o.singular, o.singular.split(" ", 1)[1]):
            names[word.lower()] = o.name
    return names


class MiniworldJudge:
    """Question + image -> '3', 'yes', 'no', detection JSON, or a refusal for a question it cannot read."""

    model_id = MODEL_ID

    def __init__(self):
        from ...miniworld import count_objects, judge_scene, relation_holds  # fail at start-up, not later

        self.count_objects, self.relation_holds, self.judge_scene = count_objects, relation_holds, judge_scene
        self.kinds = known_objects()

    def answer(self, question: str, image: Image.Image) -> str:
        """'3', 'yes', 'no' or the refusal text."""
        parsed = parse_question(question)
        if parsed is None:
            return REFUSAL
        if parsed[0] == "detect":
            kinds = [self.kinds.get(n) for n in parsed[1]]
            if None in kinds:
                return REFUSAL
            judged = self.judge_scene(image)  # boxes largest first: the judge's most certain objects
            return detections_answer(image.width, image.height, [
                Detection(b.kind, (b.x0, b.y0, b.x1, b.y1)) for b in judged.boxes if b.kind in kinds])
        if parsed[0] == "count":
            kind = self.kinds.get(parsed[1])
            return REFUSAL if kind is None else str(int(self.count_objects(image, kind)))
        _, a, relation, b = parsed
        ka, kb = self.kinds.get(a), self.kinds.get(b)
        if ka is None or kb is None:
            return REFUSAL
        holds = self.relation_holds(image, ka, relation, kb)
        return "yes" if holds else "no"  # an absent object means the relation does not hold
