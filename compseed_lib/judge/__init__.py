"""Judges: question templates, answer parsing, an async OpenAI-protocol client, a local judge server.

Every judge is reached through the `openai` client (DESIGN §2): the kit's own mini-world judge runs
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
from ..store import CorruptImageError
from .client import JudgeClient, ask, run_sync
from .errors import JudgeError, JudgeUnavailable
from .parse import answer_text, is_correct, parse_answer, parse_count, parse_yes_no
from .registry import JUDGES, JudgeSpec, api_key, open_endpoint, resolve
from .stage import judge_stage
from .templates import parse_question, question_for

__all__ = ["JUDGES", "CorruptImageError", "JudgeClient", "JudgeError", "JudgeSpec", "JudgeUnavailable",
           "answer_text", "api_key", "ask", "is_correct", "judge_stage", "open_endpoint", "parse_answer",
           "parse_count", "parse_question", "parse_yes_no", "question_for", "resolve", "run_sync"]
