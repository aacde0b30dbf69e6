"""Judging a stage: one judgement row per image of a stage, cached, resumable, tied to the image's hash.

Inputs: a `Run` whose ledger has image rows for a stage, the `Prompt`s they were generated from,
and a `JudgeConfig` (resolved through `registry`).
Outputs: one judgement row per (stage, prompt, seed, judge model, question) in the ledger, written
in batches as answers arrive; `judge_stage` returns those rows for the given prompts.
Answers are reused by (image sha256, question, judge model), so re-runs send nothing new; every image
file is checked against its ledger hash first, and a judgement of an earlier version of an image is
asked again.

Usage:
    df = judge_stage(run, "base", prompts, cfg.judge)      # works in Jupyter too
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import JudgeConfig
from ..progress import bar as progress_bar
from ..prompts import Prompt
from ..store import CorruptImageError, Run, sha256_bytes
from .client import JudgeClient, default_concurrency, run_sync
from .errors import JudgeFailed, JudgeUnavailable
from .parse import answer_text, is_correct, parse_answer
from .registry import open_endpoint, resolve
from .templates import question_for

log = logging.getLogger(__name__)
BATCH = 32  # judgement rows per ledger write: a killed run loses at most this many answers
GIVE_UP_AFTER = 16  # requests failing in a row (each after its retries), no answer between: the judge is down


@dataclass(frozen=True)
class _Job:
    prompt: Prompt
    seed: int
    question: str
    sha256: str
    path: Path


def _row(stage: str, model: str, job: _Job, raw: str) -> dict:
    parsed = parse_answer(job.prompt, raw)
    correct = is_correct(job.prompt, parsed)
    return dict(stage=stage, prompt_id=job.prompt.id, seed=job.seed, judge_model=model,
                question=job.question, image_sha256=job.sha256, raw_answer=raw,
                parsed_answer=answer_text(parsed), correct=None if correct is None else int(correct))


def _pending_jobs(run: Run, stage: str, prompts: list[Prompt], model: str) -> tuple[list[_Job], dict]:
    """Jobs without a judgement of the image as it is now, and the answer cache {(sha, question): raw}.

    Every image file of the stage is checked against its ledger hash first, judged or not, so a file
    damaged after judging is reported (by name) before any table or figure reads it. A judgement made
    of an earlier version of the image (another hash: regenerated, e.g. with another batch size) is
    stale and asked again.
    """
    by_id = {p.id: p for p in prompts}
    images = run.ledger.images(stage)
    images = images[images["prompt_id"].isin(list(by_id))]
    done = run.ledger.query("SELECT prompt_id, seed, question, image_sha256 FROM judgements "
                            "WHERE stage=? AND judge_model=?", (stage, model))
    done_keys = {(r.prompt_id, int(r.seed), r.question): r.image_sha256 for r in done.itertuples()}
    cached = run.ledger.query("SELECT image_sha256, question, raw_answer FROM judgements WHERE judge_model=? "
                              "AND raw_answer IS NOT NULL", (model,))
    cache = {(r.image_sha256, r.question): r.raw_answer for r in cached.itertuples()}
    jobs = []
    for row in images.itertuples():
        prompt, seed = by_id[row.prompt_id], int(row.seed)
        question = question_for(prompt)
        path = run.verified_image(row)
        if done_keys.get((prompt.id, seed, question)) == row.sha256:
            continue
        jobs.append(_Job(prompt, seed, question, row.sha256, path))
    return jobs, cache


@dataclass
class AskReport:
    """What one pass of asking did: requests sent (retries included), images left unanswered after their
    retries (nothing recorded for them: a rerun asks again), and the retries by cause."""

    sent: int = 0
    failed: int = 0
    retried: dict | None = None


async def _ask_all(jobs: list[_Job], stage: str, run: Run, endpoint: tuple[str, str, str],
                   cfg: JudgeConfig, progress: bool) -> AskReport:
    """Ask every job's question with `cfg.concurrency` workers; rows written every BATCH answers. A request
    that fails after its retries leaves its images unjudged; GIVE_UP_AFTER such failures in a row stop the
    stage (JudgeUnavailable), keeping every answer so far."""
    base_url, model, key = endpoint
    buffer: list[dict] = []
    groups: dict[tuple[str, str], list[_Job]] = {}  # identical images (e.g. blank ones) are asked once
    for job in jobs:
        groups.setdefault((job.sha256, job.question), []).append(job)
    queue = list(reversed(groups.values()))

    failed, in_a_row = [0], [0]

    def flush() -> None:
        if buffer:
            run.ledger.add_judgements(buffer)
            buffer.clear()

    async with JudgeClient(base_url, model, key, cfg) as jc:
        await jc.check()
        bar = progress_bar(total=len(jobs), desc=f"judge {stage}", unit="img", disable=not progress)

        async def worker() -> None:
            while queue:
                group = queue.pop()
                job = group[0]
                data = job.path.read_bytes()
                if sha256_bytes(data) != job.sha256:
                    raise CorruptImageError(f"image file {job.path} changed while judging: its sha256 "
                                            f"differs from the ledger row")
                try:
                    raw = await jc.ask(data, job.question)
                except JudgeFailed as e:
                    failed[0] += len(group)
                    in_a_row[0] += 1
                    log.debug("judge %s: %s", stage, e)
                    if in_a_row[0] >= GIVE_UP_AFTER:
                        raise JudgeUnavailable(f"{e}; {in_a_row[0]} requests in a row failed like this, so "
                                               f"the judge stage stopped (answers so far are kept: rerun "
                                               f"to go on)") from None
                    bar.update(len(group))
                    continue
                in_a_row[0] = 0
                buffer.extend(_row(stage, model, j, raw) for j in group)
                bar.update(len(group))
                if len(buffer) >= BATCH:
                    flush()

        failure: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(cfg.concurrency, len(groups))):
                    tg.create_task(worker())
        except BaseExceptionGroup as eg:
            errors = [e for e in eg.exceptions if not isinstance(e, asyncio.CancelledError)]
            failure = errors[0] if errors else eg
        finally:
            flush()
            bar.close()
        if failure is not None:  # raised outside the handler: no context cycle through the group (which
            failure.__context__ = None  # IPython cannot render, printing a raw traceback instead)
            raise failure
        return AskReport(jc.sent, failed[0], dict(jc.retried))


def judge_stage(run: Run, stage: str, prompts: list[Prompt], cfg: JudgeConfig,
                progress: bool = True) -> pd.DataFrame:
    """Judge every image of `stage` whose prompt is in `prompts`; resumable; returns the judgement rows."""
    spec = resolve(cfg)
    model = spec.model
    if cfg.concurrency is None:  # the kit's own server (started here) shares this machine's cores
        cfg = dataclasses.replace(cfg, concurrency=default_concurrency(spec.local and spec.base_url is None))
    jobs, cache = _pending_jobs(run, stage, prompts, model)
    hits = [_row(stage, model, j, cache[(j.sha256, j.question)]) for j in jobs
            if (j.sha256, j.question) in cache]
    run.ledger.add_judgements(hits)
    to_send = [j for j in jobs if (j.sha256, j.question) not in cache]
    log.info("judge %s with %s: %d to ask, %d answered from the cache", stage, model, len(to_send), len(hits))
    report = AskReport(retried={})
    if to_send:
        with open_endpoint(cfg) as endpoint:
            report = run_sync(_ask_all(to_send, stage, run, endpoint, cfg, progress))
        log.info("judge %s: %d requests sent for %d images%s", stage, report.sent, len(to_send),
                 f" (retries: {', '.join(f'{k} {v}' for k, v in sorted(report.retried.items()))})"
                 if report.retried else "")
    judged = run.ledger.judgements(stage, model)
    judged = judged[judged["prompt_id"].isin([p.id for p in prompts])].reset_index(drop=True)
    unknown = int(judged["correct"].isna().sum())
    summary = (f"judge {stage}: {len(judged) - unknown} answered, {unknown} unknown (an answer with no count "
               f"or verdict: left out of every accuracy, never scored wrong), {report.failed} failed after "
               f"retries")
    if report.failed:
        log.warning("%s (nothing recorded for them: run the stage again to fill them in)", summary)
    else:
        log.info("%s", summary)
    return judged
