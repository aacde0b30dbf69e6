"""Prompt sets: Comp90 and the mini world, parsed into `Prompt` records with stable ids.

Inputs: a prompt folder in the Comp90 form (`prompt_dataset/comp90/` or `prompt_dataset/miniworld/`):
  objects_{train,eval}.txt        `name, singular with article, plural`
  backgrounds_{train,eval}.txt    one background phrase a line
  spatial_prompts_{train,eval}.txt  `A/an X {on the left of|on the right of|on the top of|under} a/an Y`
Outputs: lists of `Prompt` (numerical: "{count word} {plural}, {background}", counts two..six;
spatial: the sentences as given, parsed into object A, relation, object B).

Usage:
    from compseed_lib import prompts
    ps = prompts.load("miniworld", split="train", kinds=("count", "spatial"))
    ps[0].id, ps[0].text, ps[0].category, ps[0].target
"""
from __future__ import annotations

import functools
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

PROMPT_ROOT = Path(__file__).resolve().parent.parent / "prompt_dataset"
WORLDS = ("comp90", "miniworld")
SPLITS = ("train", "eval")
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven",
               8: "eight", 9: "nine", 10: "ten"}
# Phrase in the sentence files -> relation name used everywhere else.
RELATION_PHRASES = {"on the left of": "left", "on the right of": "right",
                    "on the top of": "above", "under": "below"}
RELATION_TEXT = {v: k for k, v in RELATION_PHRASES.items()}
RELATIONS: tuple[str, ...] = tuple(RELATION_TEXT)  # left, right, above, below
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
# Every phrase a question or a judge's answer may use for a relation (ours first), longest first when
# matched. The one owner of relation wording: templates, answer parsing and the mini world read it here.
RELATION_SYNONYMS: dict[str, str] = {
    **RELATION_PHRASES, "to the left of": "left", "left of": "left", "on the left side of": "left",
    "to the left side of": "left", "to the right of": "right", "right of": "right",
    "on the right side of": "right", "to the right side of": "right", "on top of": "above", "above": "above",
    "over": "above", "below": "below", "beneath": "below", "underneath": "below"}
log = logging.getLogger(__name__)
_NAME_OK = re.compile(r"^[A-Za-z][A-Za-z0-9' -]*$")
_SPATIAL = re.compile(r"^(a|an)\s+(.+?)\s+(" + "|".join(map(re.escape, RELATION_PHRASES))
                      + r")\s+(a|an)\s+(.+)$", re.IGNORECASE)


class PromptFileError(ValueError):
    """A prompt file is missing or has a malformed line (the message names file and line)."""


@dataclass(frozen=True)
class Obj:
    """An object word: `name` (apple), `singular` with article (an apple), `plural` (apples)."""

    name: str
    singular: str
    plural: str


@dataclass(frozen=True)
class Prompt:
    """One prompt with what it asks for; `id` depends only on the text, never on list order."""

    id: str
    text: str
    kind: str  # "count" | "spatial"
    obj: Obj  # the counted object, or object A of a relation
    split: str
    world: str
    count: int | None = None
    background: str | None = None
    relation: str | None = None  # left | right | above | below
    obj_b: Obj | None = None

    @property
    def category(self) -> str:
        """Mining category: 'count=3' or the relation name."""
        return f"count={self.count}" if self.kind == "count" else str(self.relation)

    @property
    def target(self) -> str:
        """Ground-truth target as a string: the count, or 'A left B'."""
        if self.kind == "count":
            return str(self.count)
        return f"{self.obj.name} {self.relation} {self.obj_b.name}"  # type: ignore[union-attr]


def prompt_id(kind: str, text: str) -> str:
    """Stable id from kind and text (case and spacing folded): 'n' or 's' + 10 hex digits of sha1."""
    canon = " ".join(text.lower().split())
    return ("n" if kind == "count" else "s") + hashlib.sha1(canon.encode()).hexdigest()[:10]


def check_name(name: str, where: str) -> str:
    """Reject object/background words that could escape a path or break a template."""
    if not name or "/" in name or "\\" in name or ".." in name or not _NAME_OK.match(name):
        raise PromptFileError(f"{where}: bad object name {name!r} (letters, digits, spaces, ' and - only)")
    return name


def _lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise PromptFileError(f"prompt file not found: {path}")
    out = []
    for i, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append((i, line))
    return out


def read_objects(path: Path) -> list[Obj]:
    """Parse `name, singular, plural` lines."""
    objs = []
    for i, line in _lines(path):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not all(parts):
            raise PromptFileError(f"{path}:{i}: expected 'name, singular with article, plural', got {line!r}")
        name, singular, plural = parts
        check_name(name, f"{path}:{i}")
        check_name(plural, f"{path}:{i}")
        if not re.match(r"^(a|an)\s+\S", singular, re.IGNORECASE):
            raise PromptFileError(f"{path}:{i}: singular {singular!r} must start with 'a' or 'an'")
        objs.append(Obj(name, singular, plural))
    return objs


def read_backgrounds(path: Path) -> list[str]:
    """One background phrase per line."""
    return [line for _, line in _lines(path)]


def parse_spatial(sentence: str, where: str = "<sentence>") -> tuple[Obj, str, Obj]:
    """'a dove on the left of a tiger' -> (Obj dove, 'left', Obj tiger); plural is a guess (+s)."""
    m = _SPATIAL.match(sentence.strip())
    if not m:
        raise PromptFileError(f"{where}: cannot parse spatial prompt {sentence!r}; expected "
                              f"'a/an X <relation> a/an Y' with relation one of {list(RELATION_PHRASES)}")
    art_a, a, phrase, art_b, b = m.groups()
    a, b = check_name(a, where), check_name(b, where)
    obj_a = Obj(a, f"{art_a.lower()} {a}", a + "s")
    obj_b = Obj(b, f"{art_b.lower()} {b}", b + "s")
    return obj_a, RELATION_PHRASES[phrase.lower()], obj_b


def numerical_text(obj: Obj, count: int, background: str) -> str:
    """The paper's template: '{count word} {plural}, {background}' ('one ball, …' for a single one)."""
    return f"{COUNT_WORDS[count]} {obj.plural if count != 1 else obj.name}, {background}"


def folder(world: str | Path) -> Path:
    """Prompt folder of a named world, or a path given directly."""
    if str(world) in WORLDS:
        return PROMPT_ROOT / str(world)
    path = Path(world)
    if not path.is_dir():
        raise PromptFileError(f"unknown prompt world {str(world)!r}: use one of {list(WORLDS)} or a folder")
    return path


def world_objects(world: str | Path = "miniworld") -> list[Obj]:
    """Every object of a world, train split then eval split (the one reader of all of a world's objects)."""
    root = folder(world)
    return [o for s in SPLITS if (root / f"objects_{s}.txt").is_file() for o in read_objects(root / f"objects_{s}.txt")]


def world_backgrounds(world: str | Path = "miniworld") -> list[str]:
    """Every background phrase of a world, train split then eval split."""
    root = folder(world)
    return [b for s in SPLITS if (root / f"backgrounds_{s}.txt").is_file()
            for b in read_backgrounds(root / f"backgrounds_{s}.txt")]


def numerical_prompts(world: str | Path = "miniworld", split: str = "train",
                      counts: tuple[int, ...] = (2, 3, 4, 5, 6)) -> list[Prompt]:
    """Every (object, count, background) of a split, in file order."""
    if split not in SPLITS:
        raise PromptFileError(f"unknown split {split!r}: use one of {list(SPLITS)}")
    bad = [c for c in counts if c not in COUNT_WORDS]
    if bad:
        raise PromptFileError(f"counts {bad} unsupported: use 1..10")
    root = folder(world)
    objs = read_objects(root / f"objects_{split}.txt")
    bgs = read_backgrounds(root / f"backgrounds_{split}.txt")
    out = []
    for obj in objs:
        for count in counts:
            for bg in bgs:
                text = numerical_text(obj, count, bg)
                out.append(Prompt(prompt_id("count", text), text, "count", obj, split,
                                  Path(world).name, count=count, background=bg))
    return out


def spatial_prompts(world: str | Path = "miniworld", split: str = "train") -> list[Prompt]:
    """The spatial sentences of a split, parsed; plurals come from the object list when known."""
    if split not in SPLITS:
        raise PromptFileError(f"unknown split {split!r}: use one of {list(SPLITS)}")
    root = folder(world)
    known = {}
    for s in SPLITS:
        f = root / f"objects_{s}.txt"
        if f.is_file():
            known.update({o.name.lower(): o for o in read_objects(f)})
    path = root / f"spatial_prompts_{split}.txt"
    out, seen = [], set()
    for i, line in _lines(path):
        a, rel, b = parse_spatial(line, f"{path}:{i}")
        a, b = known.get(a.name.lower(), a), known.get(b.name.lower(), b)
        pid = prompt_id("spatial", line)
        if pid in seen:  # Comp90's files repeat a few sentences (some only in case): keep the first
            continue
        seen.add(pid)
        out.append(Prompt(pid, line, "spatial", a, split, Path(world).name, relation=rel, obj_b=b))
    if len(seen) < len(_lines(path)):
        log.info("%s: %d repeated sentences kept once", path.name, len(_lines(path)) - len(seen))
    return out


def factors(p: Prompt) -> dict[str, str]:
    """The factors a prompt set varies, as a sample must spread over them: object, background and count of a
    counting prompt; object A, object B, their unordered pair and the relation of a spatial one."""
    if p.kind == "count":
        return {"object": p.obj.name, "background": str(p.background), "count": str(p.count)}
    pair = " & ".join(sorted((p.obj.name, p.obj_b.name)))  # type: ignore[union-attr]
    return {"object": p.obj.name, "object_b": p.obj_b.name, "pair": pair,  # type: ignore[union-attr]
            "relation": str(p.relation)}


MARGINAL_WEIGHT, T0, STEPS0, FIRST_PAIR = 1000.0, 2.0, 4000, 30.0


@functools.lru_cache(maxsize=256)
def _design(keys: tuple[tuple[str, ...], ...], ids: tuple[str, ...], n: int, seed: int) -> frozenset[int]:
    """Indices of the `n` rows of `keys` (each row: its factors' levels) that `balanced` keeps."""
    import math
    import random

    k = len(keys[0])
    terms = [(f,) for f in range(k)] + [(f, g) for f in range(k) for g in range(f + 1, k)]
    # per term: each row's level (or cell of two levels) as an index, its weight and its even share
    cols, weights, shares = [], [], []
    for t in terms:
        cells = [tuple(row[f] for f in t) for row in keys]
        index = {c: i for i, c in enumerate(sorted(set(cells)))}
        cols.append([index[c] for c in cells])
        weights.append(MARGINAL_WEIGHT if len(t) == 1 else FIRST_PAIR if t == (0, 1) else 1.0)
        shares.append(n / len(index))
    counts = [[0.0] * (max(c) + 1) for c in cols]
    rng = random.Random(f"{seed}:{n}:" + ",".join(sorted(ids)))
    order = sorted(range(len(keys)), key=lambda i: hashlib.sha1(f"{seed}:{ids[i]}".encode()).digest())

    def add_cost(i: int) -> float:  # (c + 1 - s)^2 - (c - s)^2 summed over the row's levels and cells
        return sum(w * (2 * (cnt[c[i]] - s) + 1) for c, cnt, w, s in zip(cols, counts, weights, shares))

    inside: set[int] = set()
    for _ in range(n):  # greedy start: the row that adds least (ties: by hash, never by file order)
        best = min((i for i in order if i not in inside), key=add_cost)
        inside.add(best)
        for c, cnt in zip(cols, counts):
            cnt[c[best]] += 1
    outside = [i for i in order if i not in inside]
    inside_l = [i for i in order if i in inside]

    def swap_delta(i: int, o: int) -> float:  # objective change of taking o in for i
        d = 0.0
        for c, cnt, w in zip(cols, counts, weights):
            a, b = c[i], c[o]
            if a != b:
                d += w * (2 * (cnt[b] - cnt[a]) + 2)
        return d

    def objective() -> float:
        return sum(w * sum((x - s) ** 2 for x in cnt) for cnt, w, s in zip(counts, weights, shares))

    # simulated annealing over one-for-one swaps; the best sample seen is kept
    best_obj, best_set, cur = objective(), set(inside_l), objective()
    steps = STEPS0 + 40 * len(keys)
    for step in range(steps):
        temp = T0 * (0.002 ** (step / steps))
        a, b = rng.randrange(len(inside_l)), rng.randrange(len(outside))
        i, o = inside_l[a], outside[b]
        d = swap_delta(i, o)
        if d <= 0 or rng.random() < math.exp(-d / temp):
            for c, cnt in zip(cols, counts):
                cnt[c[i]] -= 1
                cnt[c[o]] += 1
            inside_l[a], outside[b] = o, i
            cur += d
            if cur < best_obj - 1e-9:
                best_obj, best_set = cur, set(inside_l)
    return frozenset(best_set)


def balanced(ps: list[Prompt], n: int, seed: int = 0) -> list[Prompt]:
    """`n` prompts of one kind spread over every factor and every pair of factors as evenly as `n` allows
    (file order kept).

    The sample minimises the squared distance of each level's count from its even share, over the factors
    (weighted so that they come first) and over the cells of every pair of factors (`factors`): a greedy start,
    then simulated annealing over one-for-one swaps. Ties and the search's randomness come from hashes of the
    prompt ids and `seed`, never from file order. An evenly spaced pick from a file sorted by factor aliases
    with the factors (every 5th prompt of an object x count x background file is one background); this one
    cannot. The same prompts, `n` and `seed` give the same sample."""
    if n >= len(ps):
        return list(ps)
    if n <= 0:
        return []
    keys = tuple(tuple(factors(p).values()) for p in ps)
    if len({len(k) for k in keys}) != 1:
        raise ValueError("balanced() takes prompts of one kind")
    keep = _design(keys, tuple(p.id for p in ps), n, seed)
    return [p for i, p in enumerate(ps) if i in keep]


def load(world: str | Path = "miniworld", split: str = "train",
         kinds: tuple[str, ...] = ("count", "spatial"), counts: tuple[int, ...] = (2, 3, 4, 5, 6),
         limit: int | None = None) -> list[Prompt]:
    """Numerical and/or spatial prompts of a world and split; `limit` keeps at most that many of each kind,
    spread over every factor and pair of factors (`balanced`)."""
    unknown = set(kinds) - {"count", "spatial"}
    if unknown:
        raise PromptFileError(f"unknown prompt kinds {sorted(unknown)}: use 'count' and/or 'spatial'")
    out: list[Prompt] = []
    for kind in kinds:
        ps = numerical_prompts(world, split, counts) if kind == "count" else spatial_prompts(world, split)
        out.extend(balanced(ps, limit) if limit is not None and len(ps) > limit else ps)
    ids = [p.id for p in out]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise PromptFileError(f"duplicate prompts in {world}/{split}: ids {dup[:5]}")
    return out


def to_records(ps: list[Prompt]) -> list[dict]:
    """Flat dicts for a DataFrame or the ledger."""
    return [dict(prompt_id=p.id, prompt=p.text, kind=p.kind, category=p.category, target=p.target,
                 obj=p.obj.name, plural=p.obj.plural, count=p.count, background=p.background,
                 relation=p.relation, obj_b=p.obj_b.name if p.obj_b else None, split=p.split,
                 world=p.world) for p in ps]


def other_split(split: str) -> str:
    """The split a run's held-out steps use: the one its seeds are not mined on."""
    return next(s for s in SPLITS if s != split)


def for_config(cfg, split: str | None = None) -> list[Prompt]:
    """The prompts a run's `PromptConfig` names (of another split when `split` is given)."""
    return load(cfg.world, split or cfg.split, tuple(cfg.kinds), tuple(cfg.counts), cfg.limit)


def for_dataset(cfg) -> list[Prompt]:
    """The training prompts a run's datasets are drawn from (a RunConfig; the validation share still in): every
    prompt of the training split with `dataset.prompts` 'all' (the paper's design: every object on every
    background at every count, every pair under every relation), or the mining prompts with 'mining'."""
    p = cfg.prompts
    if cfg.dataset.prompts == "mining":
        return for_config(p)
    return load(p.world, p.split, tuple(p.kinds), tuple(p.counts))


def prompt_table(ps: list[Prompt]):
    """The prompts as a pandas DataFrame (one row per prompt)."""
    import pandas as pd

    return pd.DataFrame(to_records(ps))
