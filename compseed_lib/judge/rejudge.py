"""Re-reading a run's stored raw answers with the current parser: which verdicts would change.

A judge's raw answer is stored beside what was read from it, so a fix of the reader can be measured
on finished runs without asking the judge again. `rejudge` parses every stored raw answer anew and
returns the rows whose reading (parsed answer or correctness) differs; `--apply` writes the new
readings into the ledger (tables built from it must then be rebuilt by re-running their notebooks).

Inputs: a run folder (`runs/<name>`, with its `ledger.sqlite` and `config.yaml`).
Outputs: a DataFrame of changed rows and a summary dict (rows read, changed, unknown prompts).

Usage:
    compseed rejudge runs/mini [runs/mini-sd ...] [--apply]
    changed, summary = rejudge(Run.open("runs/mini"))
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from .. import prompts as P
from ..store import Run
from .parse import answer_text, is_correct, parse_answer


def _prompts_by_id(run: Run) -> dict[str, P.Prompt]:
    """Every prompt the run's world can have judged (both splits, counts 1–10), by id."""
    world = run.config().prompts.world
    out: dict[str, P.Prompt] = {}
    for split in P.SPLITS:
        for p in P.load(world, split, counts=tuple(range(1, 11))):
            out[p.id] = p
    return out


def rejudge(run: Run) -> tuple[pd.DataFrame, dict]:
    """(rows whose reading changes, summary) for every stored raw answer of `run`."""
    rows = run.ledger.query("SELECT stage, prompt_id, seed, judge_model, question, raw_answer, parsed_answer, "
                            "correct FROM judgements")
    by_id = _prompts_by_id(run)
    changed, unknown_prompt = [], 0
    for r in rows.itertuples(index=False):
        prompt = by_id.get(r.prompt_id)
        if prompt is None:
            unknown_prompt += 1
            continue
        parsed = parse_answer(prompt, r.raw_answer)
        ok = is_correct(prompt, parsed)
        new_text, new_ok = answer_text(parsed), None if ok is None else int(ok)
        old_ok = None if pd.isna(r.correct) else int(r.correct)
        old_text = None if r.parsed_answer is None or (isinstance(r.parsed_answer, float)
                                                        and pd.isna(r.parsed_answer)) else r.parsed_answer
        if new_text != old_text or new_ok != old_ok:
            changed.append(dict(stage=r.stage, prompt_id=r.prompt_id, seed=r.seed, judge_model=r.judge_model,
                                question=r.question, raw_answer=r.raw_answer, parsed_before=old_text,
                                parsed_now=new_text, correct_before=old_ok, correct_now=new_ok))
    out = pd.DataFrame(changed, columns=["stage", "prompt_id", "seed", "judge_model", "question", "raw_answer",
                                         "parsed_before", "parsed_now", "correct_before", "correct_now"])
    summary = dict(run=str(run.root), rows=len(rows), changed=len(out), unknown_prompt=unknown_prompt,
                   distinct_raw_answers=int(rows.raw_answer.nunique()),
                   flipped=int(((out.correct_before == 1) & (out.correct_now == 0)).sum()
                               + ((out.correct_before == 0) & (out.correct_now == 1)).sum()),
                   now_unknown=int((out.correct_before.notna() & out.correct_now.isna()).sum()))
    return out, summary


def apply(run: Run, changed: pd.DataFrame) -> None:
    """Write the new readings of `changed` into the run's ledger."""
    with run.ledger.connect() as con:
        con.executemany("UPDATE judgements SET parsed_answer=?, correct=? WHERE stage=? AND prompt_id=? AND seed=? "
                        "AND judge_model=? AND question=?",
                        [(r.parsed_now, None if pd.isna(r.correct_now) else int(r.correct_now), r.stage,
                          r.prompt_id, int(r.seed), r.judge_model, r.question) for r in changed.itertuples()])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="compseed rejudge", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders, e.g. runs/mini")
    ap.add_argument("--apply", action="store_true", help="write the new readings into each ledger")
    ap.add_argument("--show", type=int, default=10, help="changed rows to print per run (default 10)")
    args = ap.parse_args(argv)
    status = 0
    for folder in args.runs:
        try:
            run = Run.open(folder)
        except (FileNotFoundError, ValueError) as e:
            print(f"compseed rejudge: error: {folder}: {e}", file=sys.stderr)
            status = 2
            continue
        changed, s = rejudge(run)
        print(f"{folder}: {s['rows']} stored answers ({s['distinct_raw_answers']} distinct), "
              f"{s['changed']} readings change, {s['flipped']} correct<->wrong, {s['now_unknown']} now unknown, "
              f"{s['unknown_prompt']} rows of prompts the world does not list")
        if len(changed):
            print(changed.head(args.show).to_string(index=False))
        if args.apply and len(changed):
            apply(run, changed)
            print(f"{folder}: ledger updated; re-run the notebooks from 02_judge to rebuild the tables")
    return status


if __name__ == "__main__":
    sys.exit(main())
