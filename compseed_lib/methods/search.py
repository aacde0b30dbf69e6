"""Best-of-N noise search: per prompt, make N seeds' images, ask a judge about each, keep the best-scoring seed.

The upper bound of seed selection: instead of one image from a seed mined once for a category, spend N images
per prompt and let a verifier pick. Compute is recorded (images generated and judge requests per prompt), so it
is compared at matched compute with one image from a mined top seed; `curve()` gives the accuracy of
best-of-k for k = 1..N from the same images (k images per prompt each).

The selection judge and the scoring judge are separate parameters: with `score_judge` the chosen images are
scored by a second judge (an honest number); without it the selection judge's own verdict on the chosen image
is reported, which flatters the search (it picked the image that judge liked) — the table says which.

Scores: 1 for a correct answer; a wrong count scores -|answer - asked| (closer counts win when none is right),
a wrong relation 0; an answer that cannot be parsed (or a request that failed after its retries) is never
preferred. Ties go to the earlier seed in the candidate order.

Inputs: a loaded pipeline and its info (`pipelines.load_pipeline`), `prompts.Prompt`s, candidate seeds (the
same N for every prompt), `JudgeConfig`s (the kit's judge protocol: any OpenAI-compatible server; the mini
world's exact judge is `compseed serve-judge`, started on loopback by `open_endpoint`), call settings.
Outputs: a `SearchResult` — `chosen` (one row per prompt: chosen seed, its score, images generated, judge
requests, the scoring judge's verdict), `candidates` (one row per prompt x seed with the selection judge's
answer and score), `images` {(prompt_id, seed): PIL image}; `curve()`.

Usage:
    res = search.best_of_n(pipe, info, prompts, seeds=range(10000, 10008), judge=JudgeConfig(),
                           steps=10, guidance=4.0, height=32, width=32)
    res.chosen[["prompt", "seed", "score", "images_generated"]]; res.curve()
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from ..config import JudgeConfig, check_seeds
from ..generate import render
from ..judge.client import JudgeClient, png_bytes, run_sync
from ..judge.parse import answer_text, is_correct, parse_answer
from ..judge.registry import check_answerable, open_endpoint, resolve
from ..judge.templates import question_for
from ..prompts import Prompt

log = logging.getLogger(__name__)


def score_answer(prompt: Prompt, raw: str | None) -> float:
    """A judge's answer as a score (higher is better; see the module docstring); NaN when unknown."""
    parsed = None if raw is None else parse_answer(prompt, raw)
    correct = is_correct(prompt, parsed)
    if correct is None:
        return math.nan
    if correct:
        return 1.0
    return -abs(int(parsed) - int(prompt.count)) if prompt.kind == "count" else 0.0


def ask_images(images: Sequence, questions: Sequence[str], cfg: JudgeConfig) -> tuple[list[str | None], int]:
    """(raw answers, requests sent) of one judge for each (image, question); an answer that kept failing after
    its retries is None (JudgeUnavailable, a server that cannot be reached, is raised)."""
    from ..judge.errors import JudgeFailed

    async def go(endpoint):
        async with JudgeClient(*endpoint, cfg) as jc:
            await jc.check()

            async def one(image, question):
                try:
                    return await jc.ask(png_bytes(image), question)
                except JudgeFailed as e:
                    log.warning("best-of-N: %s", e)
                    return None
            answers = await asyncio.gather(*(one(im, q) for im, q in zip(images, questions, strict=True)))
            return list(answers), jc.sent

    with open_endpoint(cfg) as endpoint:
        return run_sync(go(endpoint))


@dataclass
class SearchResult:
    """What a best-of-N search chose and what it cost (see the module docstring)."""

    chosen: pd.DataFrame
    candidates: pd.DataFrame
    images: dict = field(repr=False)
    score_judge: JudgeConfig | None = None
    score_answers: dict = field(default_factory=dict, repr=False)  # {(prompt_id, seed): raw} of the score judge

    def curve(self) -> pd.DataFrame:
        """Accuracy of best-of-k for k = 1..N (the first k candidate seeds per prompt; k images per prompt):
        by the scoring judge when the search has one (images it has not seen yet are asked now), else by the
        selection judge. Columns: k, images_per_prompt, accuracy, n, judge."""
        picks = []
        for k in range(1, int(self.candidates["rank"].max()) + 2):
            first = self.candidates[self.candidates["rank"] < k]
            for _, g in first.groupby("prompt_id", sort=False):
                picks.append((k, _pick(g)))
        if self.score_judge is not None:
            todo = sorted({(r.prompt_id, int(r.seed)) for _, r in picks} - set(self.score_answers))
            self._score(todo)
        rows = []
        for k in sorted({k for k, _ in picks}):
            verdicts = [(r.select_correct if self.score_judge is None
                         else _correct(r.prompt_obj, self.score_answers.get((r.prompt_id, int(r.seed)))))
                        for kk, r in picks if kk == k]
            known = [v for v in verdicts if v is not None and not (isinstance(v, float) and math.isnan(v))]
            rows.append(dict(k=k, images_per_prompt=k, accuracy=sum(map(bool, known)) / len(known) if known else None,
                             n=len(known), judge="score" if self.score_judge is not None else "selection"))
        return pd.DataFrame(rows)

    def _score(self, keys: list[tuple[str, int]]) -> None:
        if not keys:
            return
        prompts = {r.prompt_id: r.prompt_obj for r in self.candidates.itertuples()}
        answers, _ = ask_images([self.images[k] for k in keys], [question_for(prompts[k[0]]) for k in keys],
                                self.score_judge)
        self.score_answers.update(zip(keys, answers, strict=True))


def _correct(prompt: Prompt, raw: str | None) -> bool | None:
    return is_correct(prompt, None if raw is None else parse_answer(prompt, raw))


def _pick(group: pd.DataFrame):
    """The best-scoring row of one prompt's candidates (ties: the earliest; unknown scores never win a known)."""
    scores = group["select_score"].fillna(-math.inf).to_numpy()
    return group.iloc[int(scores.argmax())]


def best_of_n(pipe, info: dict, prompts: Sequence[Prompt], seeds: Sequence[int], judge: JudgeConfig | None = None,
              steps: int = 10, guidance: float = 4.0, height: int = 32, width: int = 32,
              score_judge: JudgeConfig | None = None, batch_size: int = 16) -> SearchResult:
    """Best-of-N per prompt: N = len(seeds) images each, the `judge` (selection) picks, `score_judge` (if given)
    scores the picks; see the module docstring for scores, ties and the tables."""
    judge = judge or JudgeConfig()
    seeds = check_seeds(list(seeds))
    prompts = list(prompts)
    if not prompts:
        raise ValueError("best_of_n: no prompts given")
    if not all(isinstance(p, Prompt) for p in prompts):
        raise TypeError("best_of_n: prompts must be prompts.Prompt records (the judge's question comes from them)")
    if len({p.id for p in prompts}) != len(prompts):
        raise ValueError("best_of_n: duplicate prompts")
    for cfg in (judge, score_judge):
        if cfg is not None:
            check_answerable(resolve(cfg), prompts)
    # 1. N images per prompt
    pairs = [(p, s) for p in prompts for s in seeds]
    started = time.perf_counter()
    images = []
    for lo in range(0, len(pairs), batch_size):
        chunk = pairs[lo:lo + batch_size]
        images += render(pipe, info, [p.text for p, _ in chunk], [s for _, s in chunk], steps, guidance, height, width)
    gen_seconds = time.perf_counter() - started
    # 2. The selection judge on every image
    answers, sent = ask_images(images, [question_for(p) for p, _ in pairs], judge)
    cand = pd.DataFrame([dict(prompt_id=p.id, prompt=p.text, category=p.category, seed=s, rank=i % len(seeds),
                              select_answer=answer_text(None if a is None else parse_answer(p, a)),
                              select_correct=_correct(p, a), select_score=score_answer(p, a), prompt_obj=p)
                         for i, ((p, s), a) in enumerate(zip(pairs, answers, strict=True))])
    result = SearchResult(pd.DataFrame(), cand, {(p.id, s): im for (p, s), im in zip(pairs, images, strict=True)},
                          score_judge)
    # 3. One pick per prompt, its cost, and (with a second judge) its honest score
    picks = [_pick(g) for _, g in cand.groupby("prompt_id", sort=False)]
    if score_judge is not None:
        result._score([(r.prompt_id, int(r.seed)) for r in picks])
    sel_model, score_model = resolve(judge).model, resolve(score_judge).model if score_judge else None
    rows = []
    for r in picks:
        raw = result.score_answers.get((r.prompt_id, int(r.seed))) if score_judge else None
        rows.append(dict(prompt_id=r.prompt_id, prompt=r.prompt, category=r.category, seed=int(r.seed),
                         select_score=r.select_score, select_correct=r.select_correct,
                         correct=_correct(r.prompt_obj, raw) if score_judge else r.select_correct,
                         scored_by="score judge " + score_model if score_judge else
                         "selection judge (optimistic: it picked this image)",
                         images_generated=len(seeds), judge_requests=len(seeds) + (1 if score_judge else 0),
                         selection_judge=sel_model, seconds_generating=gen_seconds / len(prompts)))
    result.chosen = pd.DataFrame(rows)
    log.info("best-of-%d over %d prompts: %d images, %d selection requests, %.1f s generating", len(seeds),
             len(prompts), len(images), sent, gen_seconds)
    return result
