"""Every part of a prompt set the kit takes spreads over each factor and each pair of factors.

A pick of evenly spaced prompts from a file sorted object -> count -> background aliases with the factors
(`limit=20` once gave each object on one background and every spatial prompt with a ball). These tests check
the marginal and pairwise coverage of `prompts.balanced` over many sizes, in both worlds, and of the subsets
the kit takes from it: `limit`, the validation split and the held-out split.
"""
from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest

from compseed_lib import prompts as P
from compseed_lib.config import load_config
from compseed_lib.dataset import validation_split

POOLS = [("miniworld", "train", "count"), ("miniworld", "train", "spatial"), ("miniworld", "eval", "count"),
         ("miniworld", "eval", "spatial"), ("comp90", "train", "count"), ("comp90", "eval", "count"),
         ("comp90", "train", "spatial"), ("comp90", "eval", "spatial")]


def coverage(sub, pool) -> dict[tuple[str, ...], tuple[int, int, float, int]]:
    """(fewest, most, even share, most any subset of this size must hold) of every level and every cell of
    two factors the pool has."""
    facs = [P.factors(p) for p in pool]
    names = list(facs[0])
    out = {}
    for t in [(f,) for f in names] + list(itertools.combinations(names, 2)):
        levels = {tuple(fa[f] for f in t) for fa in facs}
        c = Counter(tuple(P.factors(p)[f] for f in t) for p in sub)
        avail = Counter(tuple(fa[f] for f in t) for fa in facs)
        forced = max(a - (len(pool) - len(sub)) for a in avail.values())
        out[t] = (min(c.get(v, 0) for v in levels), max(c.values()), len(sub) / len(levels), forced)
    return out


def factorial(pool) -> bool:
    """True when the pool holds every combination its factors allow (the mini world; Comp90's counting)."""
    facs = [P.factors(p) for p in pool]
    if pool[0].kind == "count":
        return len(pool) == math.prod(len({fa[f] for fa in facs}) for f in facs[0])
    objs = {fa["object"] for fa in facs} | {fa["object_b"] for fa in facs}
    return len(pool) == len(objs) * (len(objs) - 1) * len({fa["relation"] for fa in facs})


def check(sub, pool, where: str) -> None:
    cov = coverage(sub, pool)
    full = factorial(pool)
    first = tuple(list(P.factors(pool[0]))[:2])  # object x background, or object A x object B
    for term, (lo, hi, share, forced) in cov.items():
        what = f"{where}: {' x '.join(term)} counts {lo}..{hi} for an even share of {share:.2f}"
        if not full:  # Comp90's spatial sentences: some objects are in few of them, so others must fill in
            assert hi <= max(math.ceil(share) + 2, forced + 1), what
            continue
        assert lo >= math.floor(share) - 1 and hi <= math.ceil(share) + 1, what
        if len(term) == 1 and full:
            assert hi - lo <= 1, what  # every level of every factor as even as the size allows
        if term == first and full:
            assert hi - lo <= (1 if len(pool) <= 200 else 2), what
            assert lo >= 1 or share < 1, what  # every object on every background once there is room


@pytest.mark.parametrize("world,split,kind", POOLS)
def test_balanced_subsets_cover_every_factor_and_pair(world, split, kind):
    pool = P.load(world, split, (kind,))
    sizes = sorted({2, 3, 5, 8, 12, 20, 30, 40, len(pool) // 2, len(pool) - 3} | (
        {60, 150, 300} if len(pool) > 400 else set()))
    top = len(pool) if factorial(pool) else len(pool) // 2  # near-whole parts of Comp90's sentences: forced
    for n in [s for s in sizes if 0 < s < top]:
        sub = P.balanced(pool, n)
        assert len(sub) == n and len({p.id for p in sub}) == n
        assert [p.id for p in sub] == [p.id for p in pool if p in sub]  # file order kept
        check(sub, pool, f"{world}/{split}/{kind} n={n}")


def test_limit_20_is_what_the_configs_use_and_has_no_alias():
    """The issue's case: limit 20 once gave balls on the sand, stars in the snow and a ball in every spatial
    prompt. Now every training object is on every training background and every object in both roles."""
    cfg = load_config("configs/mini.yaml")
    ps = P.for_config(cfg.prompts)
    count = [p for p in ps if p.kind == "count"]
    spatial = [p for p in ps if p.kind == "spatial"]
    objs = {o.name for o in P.read_objects(P.folder("miniworld") / "objects_train.txt")}
    bgs = set(P.read_backgrounds(P.folder("miniworld") / "backgrounds_train.txt"))
    assert {(p.obj.name, p.background) for p in count} == {(o, b) for o in objs for b in bgs}
    assert Counter(p.count for p in count) == {c: 4 for c in (2, 3, 4, 5, 6)}
    assert {p.obj.name for p in spatial} == objs and {p.obj_b.name for p in spatial} == objs
    assert sum(1 for p in spatial if "ball" in (p.obj.name, p.obj_b.name)) <= 10
    assert Counter(p.relation for p in spatial) == {r: 5 for r in P.RELATIONS}


def test_subsets_are_fixed_by_prompts_size_and_seed():
    pool = P.load("miniworld", "train", ("count",))
    a, b = P.balanced(pool, 17), P.balanced(list(reversed(pool)), 17)
    assert {p.id for p in a} == {p.id for p in b}  # the file's order does not choose
    assert {p.id for p in P.balanced(pool, 17, seed=1)} != {p.id for p in a}
    assert P.balanced(pool, 0) == [] and P.balanced(pool, 500) == pool


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5])
def test_validation_split_and_its_rest_are_balanced(share):
    ps = P.load("miniworld", "train")
    fit, val = validation_split(ps, share, seed=0)
    for kind in ("count", "spatial"):
        pool = [p for p in ps if p.kind == kind]
        v, f = [p for p in val if p.kind == kind], [p for p in fit if p.kind == kind]
        assert len(v) == round(share * len(pool)) and len(v) + len(f) == len(pool)
        check(v, pool, f"validation {share} {kind}")
        check(f, pool, f"fit {share} {kind}")
    count_fit = {(p.obj.name, p.background) for p in fit if p.kind == "count"}
    assert len(count_fit) == 20  # the datasets still hold every object on every background


def test_heldout_split_under_a_limit_is_balanced():
    cfg = load_config("configs/mini.yaml")
    held = P.for_config(cfg.prompts, split="eval")
    for kind in ("count", "spatial"):
        pool = P.load("miniworld", "eval", (kind,))
        check([p for p in held if p.kind == kind], pool, f"held-out {kind}")
