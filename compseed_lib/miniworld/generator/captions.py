"""Caption profiles: what a training caption says about its scene.

The rendered scene never changes; only the text paired with it does. A profile gives, as
probabilities, how a counting scene's caption treats the count and how a spatial scene's caption
treats the relation:

    count    exact    "three balls, on grass"        (the scene's own caption)
             omitted  "balls, on grass"
             vague    "some balls, on grass"          (some / a few / several / many)
             wrong    "five balls, on grass"          (off by one or two, never below one)
    relation stated   "a ball on the left of a star"
             omitted  "a ball and a star"
             flipped  "a ball on the right of a star"

`exact` (the default) is the clean-caption world the first generators were trained in. `web` is the
web-caption world: counts and places seldom stated, and often wrong when they are (see WEB and the
model cards of the web-caption twins for where the figures come from).

Usage:
    profile = CaptionProfile(count_exact=0.25, count_omitted=0.45, count_vague=0.15, count_wrong=0.15)
    text, form = web_caption("three balls, on grass", index=17, profile=profile)   # ("balls, on grass", "omitted")
    captions, forms = apply_profile(scene_captions, profile)
    caption_statistics(scene_captions, forms)       # rows of the card's caption table
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ... import prompts as P

COUNT_FORMS = ("exact", "omitted", "vague", "wrong")
RELATION_FORMS = ("stated", "omitted", "flipped")
VAGUE_WORDS = ("some", "a few", "several", "many")
WORDS = tuple(dict.fromkeys(w for v in VAGUE_WORDS for w in v.split()))  # what the tokenizer must know
_WRONG_STEPS = (-2, -1, 1, 2)
_WRONG_WEIGHTS = np.array([1, 2, 2, 1], dtype=float) / 6  # off by one twice as often as by two


@dataclass
class CaptionProfile:
    """Probabilities of each caption form; each group sums to 1. The defaults are exact captions."""

    count_exact: float = 1.0
    count_omitted: float = 0.0
    count_vague: float = 0.0
    count_wrong: float = 0.0
    relation_stated: float = 1.0
    relation_omitted: float = 0.0
    relation_flipped: float = 0.0
    seed: int = 0  # the caption of scene i is drawn from (i, seed): fixed per scene, like an alt text

    def check(self) -> CaptionProfile:
        for group in ("count", "relation"):
            probs = self.probabilities(group)
            for f, p in probs.items():
                if not 0.0 <= p <= 1.0:
                    raise ValueError(f"captions.{group}_{f} must be a probability in [0, 1], got {p!r}")
            if abs(sum(probs.values()) - 1.0) > 1e-6:
                names = " + ".join(f"{group}_{f}" for f in probs)
                raise ValueError(f"captions: {names} must sum to 1, got {sum(probs.values()):.4g}")
        return self

    def probabilities(self, group: str) -> dict[str, float]:
        forms = COUNT_FORMS if group == "count" else RELATION_FORMS
        return {f: getattr(self, f"{group}_{f}") for f in forms}

    @property
    def is_exact(self) -> bool:
        return self.count_exact == 1.0 and self.relation_stated == 1.0


# The web-caption world. How often a caption states a count or a place, and how often it is right,
# set from what the web-caption literature reports (cited in the twins' model cards):
#  - counts: captions that state how many objects an image holds are rare in web data, and a number
#    word in an alt text often does not give the count of the pictured objects (Paiss et al., "Teaching
#    CLIP to Count to Ten", ICCV 2023: a counting set had to be filtered out of web captions and checked
#    against an object detector);
#  - places: web captions hold little reliable spatial language (Kamath et al., "What's 'up' with
#    vision-language models?", EMNLP 2023, on LAION-2B; Chatterjee et al., "Getting it Right" /
#    SPRIGHT, ECCV 2024: spatial relationships are under-represented in LAION, CC-12M and COCO
#    captions), and left/right words in them are often not about the image's left and right.
# The mini world's scenes are all about a count or a relation, so the rates here are far higher than
# the web's base rates: they keep the statement rare *among captions of such scenes* and wrong often
# enough that the text alone is an unreliable teacher, while leaving the words learnable at all.
WEB = CaptionProfile(count_exact=0.25, count_omitted=0.45, count_vague=0.15, count_wrong=0.15,
                     relation_stated=0.30, relation_omitted=0.55, relation_flipped=0.15)
EXACT = CaptionProfile()
PRESETS = {"exact": EXACT, "web": WEB}


def _draw(rng: np.random.Generator, probs: dict[str, float]) -> str:
    forms = list(probs)
    return forms[int(rng.choice(len(forms), p=np.array(list(probs.values())) / sum(probs.values())))]


def _noun(obj: P.Obj, count: int) -> str:
    return obj.name if count == 1 else obj.plural


_OBJS = P.world_objects("miniworld")  # read once: captions are rewritten by the hundred thousand
_COUNTS = {w: n for n, w in P.COUNT_WORDS.items()}


def object_named(noun: str) -> P.Obj | None:
    """The mini-world object a noun names, singular or plural ("ball", "boxes"), or None."""
    return next((o for o in _OBJS if noun in (o.name, o.plural)), None)


def _split_count(text: str) -> tuple[int, P.Obj]:
    word, _, noun = text.partition(" ")
    obj = object_named(noun)
    if word not in _COUNTS or obj is None:
        raise ValueError(f"not a mini-world counting caption: {text!r}")
    return _COUNTS[word], obj


def web_caption(caption: str, index: int, profile: CaptionProfile) -> tuple[str, str]:
    """(caption as the profile tells it, its form) for the exact caption of scene `index`."""
    if profile.is_exact:
        return caption, ("stated" if is_spatial(caption) else "exact")
    rng = np.random.default_rng([index, 104729, profile.seed])
    text, sep, bg = caption.partition(", ")
    tail = sep + bg
    if is_spatial(text):
        a, rel, b = P.parse_spatial(text, "training caption")
        form = _draw(rng, profile.probabilities("relation"))
        if form == "omitted":
            return f"{a.singular} and {b.singular}{tail}", form
        if form == "flipped":
            rel = P.OPPOSITE[rel]
        return f"{a.singular} {P.RELATION_TEXT[rel]} {b.singular}{tail}", form
    count, obj = _split_count(text)
    form = _draw(rng, profile.probabilities("count"))
    if form == "omitted":
        return f"{_noun(obj, count)}{tail}", form
    if form == "vague":
        if count == 1:  # "some ball" is not English; a single object is "a ball"
            return f"{obj.singular}{tail}", form
        return f"{VAGUE_WORDS[int(rng.integers(len(VAGUE_WORDS)))]} {obj.plural}{tail}", form
    if form == "wrong":
        step = int(rng.choice(_WRONG_STEPS, p=_WRONG_WEIGHTS))
        said = count + step if count + step >= 1 else count - step
        return f"{P.COUNT_WORDS[said]} {_noun(obj, said)}{tail}", form
    return caption, form


def is_spatial(text: str) -> bool:
    """The caption states a relation (one of the relation phrases)."""
    return any(f" {phrase} " in f" {text} " for phrase in P.RELATION_PHRASES)


def apply_profile(captions: list[str], profile: CaptionProfile) -> tuple[list[str], list[str]]:
    """Every scene's caption under the profile, and its form (scene i keeps index i)."""
    profile.check()
    pairs = [web_caption(c, i, profile) for i, c in enumerate(captions)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def caption_statistics(captions: list[str], forms: list[str]) -> list[dict]:
    """The card's caption table: per group, each form's share of the captions seen in training, and
    how often a stated count / relation is right."""
    spatial = [is_spatial(c.partition(", ")[0]) for c in captions]
    groups = {"count": Counter(f for f, s in zip(forms, spatial) if not s),
              "relation": Counter(f for f, s in zip(forms, spatial) if s)}
    rows = []
    for group, tally in groups.items():
        n = sum(tally.values())
        for form in (COUNT_FORMS if group == "count" else RELATION_FORMS):
            rows.append({"scenes": f"{group} ({n:,})", "caption": form, "share": tally[form] / n if n else 0.0})
        stated = ("exact", "wrong") if group == "count" else ("stated", "flipped")
        said = sum(tally[f] for f in stated)
        rows.append({"scenes": f"{group} ({n:,})", "caption": f"{group} word right, when stated",
                     "share": tally[stated[0]] / said if said else float("nan")})
    return rows
