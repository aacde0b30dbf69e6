"""Judges: question templates, answer parsing, an async OpenAI-protocol client, a local judge server.

Every judge is reached through the `openai` client: the kit's own mini-world judge runs
as an OpenAI-compatible server on loopback (`compseed serve-judge`, started automatically for the
'miniworld-local' judge), GPT-4o or a vLLM server are a change of `judge.name` / `judge.base_url`.

Inputs: a Run with image rows, the prompts, a `JudgeConfig`.
Outputs: judgement rows in the run's ledger (cached by image sha256 + question + judge model).

Usage:
    from compseed_lib import judge
    df = judge.judge_stage(run, "base", prompts, cfg.judge)
    judge.ask(image, judge.question_for(prompt), cfg.judge)
    judge.parse_count("There are 12 balls")   # 12
"""
import importlib

# name -> the module that owns it, imported on first use: `compseed run` checks a config's judges through
# `judge.registry` before any notebook starts without importing the openai client or pandas
_OWNERS = {"CorruptImageError": "..store", "JudgeClient": ".client", "ask": ".client", "run_sync": ".client",
           "JudgeError": ".errors", "JudgeUnavailable": ".errors", "answer_text": ".parse", "is_correct": ".parse",
           "parse_answer": ".parse", "parse_count": ".parse", "parse_yes_no": ".parse", "JUDGES": ".registry",
           "JudgeSpec": ".registry", "api_key": ".registry", "open_endpoint": ".registry", "resolve": ".registry",
           "judge_stage": ".stage", "parse_question": ".templates", "question_for": ".templates"}
__all__ = sorted(_OWNERS)


def __getattr__(name: str):
    if name not in _OWNERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_OWNERS[name], __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_OWNERS])
