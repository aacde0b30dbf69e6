"""A stand-in for a general vision-language judge, for rehearsing real-tier configs without one.

It reads the kit's own questions (`judge.templates`) about any object and answers in the prose a
general VLM such as GPT-4o writes — "I can see 3 dogs in the image.", "No, the dog is not to the left
of the cat." — with a count or verdict drawn from a hash of the image and the question, so one image
always gets the same answer and different images differ. It knows nothing about what an image shows:
it exists so that a paper config (Comp90 objects, 768 px, its judges by name) can run end to end on a
tiny random pipeline with the judge on loopback (`compseed serve-judge --models gpt-4o=rehearsal-vlm`),
and so that the chain reads free-form answers, negations included, as a real judge gives them.

Usage:
    RehearsalJudge().answer("How many dogs are in this image? Answer with a single number.", image)
"""
from __future__ import annotations

import hashlib
import io

from PIL import Image

from ...prompts import RELATION_TEXT
from ..templates import parse_question

MODEL_ID = "rehearsal-vlm"
REFUSAL = "I'm sorry, but I can't determine that from the image."


def _draw(image: Image.Image | None, question: str, n: int) -> int:
    """A number in [0, n) fixed by the image's pixels and the question."""
    h = hashlib.sha256(question.encode())
    if image is not None:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        h.update(buf.getvalue())
    return int.from_bytes(h.digest()[:8], "big") % n


class RehearsalJudge:
    """Question + image -> a GPT-style sentence with a hash-drawn count or verdict (see module doc)."""

    model_id = MODEL_ID

    def answer(self, question: str, image: Image.Image | None) -> str:
        parsed = parse_question(question)
        if parsed is None or parsed[0] == "detect":
            return REFUSAL
        k = _draw(image, question, 12)
        if parsed[0] == "count":
            n, noun = 1 + k % 6, parsed[1]
            if n == 1:
                return "1"
            return [f"I can see {n} {noun} in the image.", f"There are {n} {noun}.", f"{n}",
                    f"The image shows {n} {noun}."][k % 4]
        _, a, relation, b = parsed
        phrase = RELATION_TEXT[relation]
        yes = k % 2 == 0
        forms = ([f"Yes, the {a} is {phrase} the {b}.", "Yes.", f"Yes — the {a} appears {phrase} the {b}."]
                 if yes else
                 [f"No, the {a} is not {phrase} the {b}.", "No.", "Definitely not.",
                  f"No. The {a} isn't {phrase} the {b}."])
        return forms[k // 2 % len(forms)]
