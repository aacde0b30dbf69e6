"""The regional planner: a prompt -> an RPG plan (split ratio, base_ratio, regional prompts) from any
OpenAI-compatible chat model, validated, retried, and falling back to the plain prompt when it fails.

Inputs: prompts (str or `prompts.Prompt`) and a `config.JudgeConfig` naming the planner endpoint through
the judge registry: "miniworld-planner" (the default: the kit's rule-based mini-world planner behind
`compseed serve-judge`, started on loopback like the local judge), "gpt-4o" (OPENAI_API_KEY), or a local
LLM server (name "vllm-qwen2-vl" with judge.model / judge.base_url overrides).
Outputs: one `PlanResult` per prompt: the checked `regional.Plan`, or, when the planner kept answering
with something unusable (unparsable JSON, a plan breaking the schema or the grammar, prompts that do not
match the regions, a refusal, timeouts, 5xx) after `max_retries` retries, the plain prompt as a
one-region plan with fallback=True and the reason. A bad plan never crashes a run; it is counted
(`fallback_summary`). A planner that cannot be reached at all, or rejects the key, fails up front.

Each request is a system message (the planning instructions and the grammar) and a user message (the
prompt), temperature 0, with a strict JSON-schema response_format; the reply is read and checked by
`regional.plan_from_json`, and a reply it rejects is retried like any malformed reply (JudgeClient).

Usage:
    results = plan_all(["two balls, on the sand", "a kite under a ring"], JudgeConfig(name="miniworld-planner"))
    images = regional.generate_regional(pipe, prompts, results, seeds)
    fallback_summary(results)   # {'prompts': 2, 'planned': 2, 'fallback': 0, 'reasons': {}}
"""
from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..config import JudgeConfig
from ..judge.client import JudgeClient, answer_content, run_sync
from ..judge.errors import JudgeFailed
from ..judge.registry import open_endpoint
from .regional import Plan, PlanError, plan_from_json

PLAN_FORMAT = {"type": "json_schema", "json_schema": {
    "name": "regional_plan", "strict": True,
    "schema": {"type": "object", "properties": {
        "split_ratio": {"type": "string"}, "base_ratio": {"type": "number"},
        "regional_prompts": {"type": "array", "items": {"type": "string"}}},
        "required": ["split_ratio", "base_ratio", "regional_prompts"], "additionalProperties": False}}}
INSTRUCTIONS = """You plan the layout of an image for a text-to-image model that draws each region with its own \
prompt. Split the image into regions so that every object the prompt counts or places has its own region, in \
the place the prompt asks for. Answer with JSON only: {"split_ratio": str, "base_ratio": number, \
"regional_prompts": [str, ...]}.
split_ratio grammar: ';' separates rows (top to bottom), ',' separates columns (left to right); the first \
number of a row is its height, the other numbers are its columns' widths; a lone number is a full row. \
Examples: "1,1,1" = one row of two equal columns; "1;1" = two equal rows; "1,1,1;1,1" = two columns over one \
full-width region.
regional_prompts: one prompt per region in reading order (rows top to bottom, left to right in a row), \
each describing only what is in that region, in the style of the original prompt.
base_ratio: in [0, 1], how much of the whole prompt is kept in every region (about 0.3)."""
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


@dataclass(frozen=True)
class PlanResult:
    """The plan of one prompt; fallback=True means the plain prompt, after the planner failed (reason)."""

    prompt: str
    plan: Plan
    fallback: bool = False
    reason: str | None = None


def read_plan(resp, structured: bool = True) -> Plan:
    """The checked plan in a chat completion; ValueError (retried by the client) naming what is wrong."""
    content = answer_content(resp, structured=False)  # no choices / refusal / empty answer -> malformed
    text = _FENCE.sub("", content.strip())
    if not text.startswith("{") and "{" in text:  # free text around the JSON (a server without json_schema)
        text = text[text.index("{"):text.rindex("}") + 1]
    try:
        obj = json.loads(text)
    except ValueError:
        raise PlanError(f"plan is not JSON: {content[:120]!r}") from None
    return plan_from_json(obj)


def _messages(prompt: str) -> list[dict]:
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": prompt}]


async def _plan_one(jc: JudgeClient, prompt: str) -> PlanResult:
    try:
        return PlanResult(prompt, await jc.complete(_messages(prompt), PLAN_FORMAT, read_plan))
    except JudgeFailed as e:  # malformed, invalid or failing after all retries: the plain prompt, counted
        return PlanResult(prompt, Plan.single(prompt), True, str(e))


def plan_all(prompts: Sequence, cfg: JudgeConfig | None = None) -> list[PlanResult]:
    """One PlanResult per prompt (str or Prompt), from the planner `cfg` names (default miniworld-planner)."""
    cfg = cfg or JudgeConfig(name="miniworld-planner")
    texts = [p if isinstance(p, str) else p.text for p in prompts]
    distinct = list(dict.fromkeys(texts))

    async def go(endpoint: tuple[str, str, str]) -> dict[str, PlanResult]:
        async with JudgeClient(*endpoint, cfg) as jc:
            await jc.check()
            return dict(zip(distinct, await asyncio.gather(*(_plan_one(jc, t) for t in distinct)), strict=True))

    if not texts:
        return []
    with open_endpoint(cfg) as endpoint:
        by_text = run_sync(go(endpoint))
    return [by_text[t] for t in texts]


def plan(prompt, cfg: JudgeConfig | None = None) -> PlanResult:
    """The PlanResult of one prompt (see plan_all)."""
    return plan_all([prompt], cfg)[0]


def fallback_summary(results: Sequence[PlanResult]) -> dict:
    """How many prompts were planned and how many fell back to the plain prompt, with the reasons."""
    reasons = Counter(re.sub(r"^.*\(last: ", "", r.reason or "").split(":")[0] for r in results if r.fallback)
    n_fallback = sum(r.fallback for r in results)
    return {"prompts": len(results), "planned": len(results) - n_fallback, "fallback": n_fallback,
            "reasons": dict(reasons)}
