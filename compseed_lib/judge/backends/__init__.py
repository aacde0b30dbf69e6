"""Judge backends: what answers a chat request behind `compseed serve-judge`.

The server (`judge/server.py`) speaks HTTP and the OpenAI chat-completions protocol only; a backend
turns (question text, image) into answer text. Backends are registered by the model id a client asks
for, so later ones (an offline detector, a rule-based planner) are one more entry here.

Interface:
    class Backend:
        model_id: str
        needs_image: bool = True    # optional; False: text-only requests (image None), the planner
        answers_json: bool = False  # optional; True: the answer is already the reply's JSON content
        def answer(self, question: str, image: PIL.Image.Image | None) -> str: ...

Usage:
    backend = make_backend("miniworld-exact")
    backend.answer("How many balls are in this image? Answer with a single number.", image)  # '3'
    make_backend("miniworld-planner").answer("two balls, on the sand", None)  # '{"split_ratio": ...}'
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from PIL import Image


class Backend(Protocol):
    """Answers one question about one image."""

    model_id: str

    def answer(self, question: str, image: Image.Image | None) -> str:
        """The answer text."""
        ...


def _miniworld() -> Backend:
    from .miniworld import MiniworldJudge

    return MiniworldJudge()


def _planner() -> Backend:
    from .planner import MiniworldPlanner

    return MiniworldPlanner()


def _rehearsal() -> Backend:
    from .rehearsal import RehearsalJudge

    return RehearsalJudge()


def _detector(model_id: str) -> Callable[[], Backend]:
    def make() -> Backend:
        from .detector import make_detector

        return make_detector(model_id)

    return make


BACKENDS: dict[str, Callable[[], Backend]] = {"miniworld-exact": _miniworld, "miniworld-planner": _planner,
                                              # a stand-in general VLM for rehearsing real-tier configs
                                              "rehearsal-vlm": _rehearsal,
                                              # offline OpenCV detectors (the `detector` extra; served on request)
                                              "coco-detector": _detector("coco-detector"),
                                              "coco-ssd": _detector("coco-ssd"),
                                              "face-detector": _detector("face-detector")}


def make_backend(model_id: str) -> Backend:
    """A backend by the model id clients ask for; ValueError naming the known ones otherwise."""
    if model_id not in BACKENDS:
        raise ValueError(f"unknown judge backend {model_id!r}: use one of {sorted(BACKENDS)}")
    return BACKENDS[model_id]()
