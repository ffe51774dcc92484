"""One sample's shadow work: re-ask the reference, ask the judge, build the record.

Runs in a background worker, never on the request path. Every call goes through the
backend adapters (one attempt each, no retries: a failed sample is counted and dropped, not
worth a second bill); the backends were checked by ``shadow_targets`` before the job was
queued.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.backends.base import Backend, UpstreamRequest, Usage
from gateway.backends.pricing import PriceBook
from gateway.config.shadow import ShadowSampling
from gateway.errors import UpstreamError
from gateway.shadow import judge as J
from gateway.shadow.errors import JudgeParseError
from gateway.shadow.records import ShadowRecord, prompt_hash
from gateway.shadow.residency import ShadowTargets

__all__ = ["ShadowJob", "StageError", "answer_text", "estimate_cost", "evaluate"]

# Fields of the client's body that the reference must not inherit: streaming (shadow calls
# are whole answers) and what the cascade added for itself.
DROPPED_FIELDS = ("stream", "stream_options", "logprobs", "top_logprobs")
EST_JUDGE_OVERHEAD_TOKENS = 350  # judge instructions and framing, per call


@dataclass(slots=True)
class ShadowJob:
    """Everything a worker needs, captured when the client's answer went out."""

    sampling: ShadowSampling
    targets: ShadowTargets
    backends: Mapping[str, Backend]  # of the runtime that served the request
    pricing: PriceBook  # of the runtime that served the request
    body: dict[str, Any]  # the client's request body
    local_backend: str
    local_answer: str
    local_usage: Usage
    time: float
    team: str
    key_name: str | None
    virtual_model: str
    rule: str
    difficulty: float | None
    confidence: float | None = None
    store_prompts: bool = False
    features: dict[str, float] = field(default_factory=dict)

    @property
    def judge(self) -> str:
        if self.targets.judge is None:  # shadow_targets said no judge: never queued
            raise ValueError("a shadow job without a judge")
        return self.targets.judge


class StageError(Exception):
    """A shadow call failed; ``stage`` is the metric label (reference, judge, parse)."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def answer_text(body: bytes | dict[str, Any]) -> str:
    """The first choice's text (a tool-call answer as its calls' JSON)."""
    obj = orjson.loads(body) if isinstance(body, bytes | bytearray) else body
    try:
        msg = obj["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return ""
    text = msg.get("content") or ""
    if not isinstance(text, str):
        text = J.content_text(text)
    calls = msg.get("tool_calls")
    if calls:
        fns = [c.get("function", c) for c in calls if isinstance(c, dict)]
        text += ("\n" if text else "") + orjson.dumps(fns).decode()
    return text


def estimate_cost(job: ShadowJob) -> float:
    """An upper-ish estimate used to reserve cap before the calls: the reference answers at
    twice the local answer's length; each judge call reads both and writes its maximum."""
    u = job.local_usage
    p, c = max(u.prompt_tokens, 1), max(u.completion_tokens, 1)
    total = 0.0
    if job.targets.reference:
        total += job.pricing.cost(job.targets.reference, Usage(p, 2 * c))
    calls = 2 if job.targets.reference else 1  # two answers graded, or two swapped verdicts
    judge_in = p + 3 * c + EST_JUDGE_OVERHEAD_TOKENS
    total += calls * job.pricing.cost(job.judge, Usage(judge_in, J.JUDGE_MAX_TOKENS))
    return total


async def _complete(
    backend: Backend, body: dict[str, Any], stage: str
) -> tuple[dict[str, Any], Usage | None]:
    try:
        resp = await backend.complete(UpstreamRequest(operation="chat", body=body))
    except UpstreamError as exc:
        raise StageError(stage, f"{stage} backend {backend.name!r}: {exc.message}") from exc
    if resp.status != 200:
        raise StageError(stage, f"{stage} backend {backend.name!r} answered {resp.status}")
    try:
        return orjson.loads(resp.body), resp.usage
    except orjson.JSONDecodeError as exc:
        raise StageError(stage, f"{stage} backend {backend.name!r}: not JSON") from exc


def _usage_dict(u: Usage | None) -> dict[str, int]:
    """A record's token counts; the prompt-cache ones (part of prompt_tokens, priced apart)
    only when there were any."""
    if u is None:
        return {}
    out = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens}
    if u.cached_tokens:
        out["cached_tokens"] = u.cached_tokens
    if u.cache_write_tokens:
        out["cache_write_tokens"] = u.cache_write_tokens
    return out


def _add(a: Usage | None, b: Usage | None) -> Usage | None:
    if a is None or b is None:
        return a or b
    return Usage(
        a.prompt_tokens + b.prompt_tokens,
        a.completion_tokens + b.completion_tokens,
        a.cached_tokens + b.cached_tokens,
        a.cache_write_tokens + b.cache_write_tokens,
    )


async def evaluate(job: ShadowJob, spent: dict[str, float]) -> ShadowRecord:
    """Run the sample's calls. A failed call raises ``StageError``; an unparsable verdict
    still yields a record (outcome None, ``error`` set, the raw reply kept). ``spent`` gets
    each backend's cost as soon as its call returns (so a later failure still accounts it)."""
    t, s = job.targets, job.sampling
    messages = job.body.get("messages") or []
    rec = ShadowRecord(
        id=uuid.uuid4().hex,
        time=job.time,
        team=job.team,
        key_name=job.key_name,
        virtual_model=job.virtual_model,
        rule=job.rule,
        difficulty=job.difficulty,
        local_backend=job.local_backend,
        reference_backend=t.reference,
        judge_backend=t.judge,
        judge_mode=s.judge_mode if t.reference else "single",
        confidence=job.confidence,
        prompt_sha256=prompt_hash(messages),
        features=job.features,
        local_tokens=_usage_dict(job.local_usage),
        home=t.home,
    )
    if job.store_prompts:
        rec.prompt, rec.local_answer = messages, job.local_answer
    ref_answer = None
    if t.reference is not None:
        body = {k: v for k, v in job.body.items() if k not in DROPPED_FIELDS}
        ref_json, ref_usage = await _complete(job.backends[t.reference], body, "reference")
        ref_answer = answer_text(ref_json)
        rec.reference_tokens = _usage_dict(ref_usage)
        ref_cost = job.pricing.cost(t.reference, ref_usage)
        spent[t.reference] = spent.get(t.reference, 0.0) + ref_cost
        rec.shadow_cost_usd += ref_cost
        if job.store_prompts:
            rec.reference_answer = ref_answer
    conversation = J.render_conversation(messages)
    if ref_answer is None or rec.judge_mode == "single":
        prompts = [J.single_messages(conversation, job.local_answer)]
        if ref_answer is not None:
            prompts.append(J.single_messages(conversation, ref_answer))
    else:
        prompts = [
            J.pairwise_messages(conversation, job.local_answer, ref_answer),
            J.pairwise_messages(conversation, ref_answer, job.local_answer),
        ]
    judge_name = job.judge
    judge = job.backends[judge_name]

    async def ask(p: list[dict[str, str]]) -> tuple[dict[str, Any], Usage | None]:
        body = {"messages": p, "temperature": 0, "max_tokens": J.JUDGE_MAX_TOKENS}
        got = await _complete(judge, body, "judge")
        spent[judge_name] = spent.get(judge_name, 0.0) + job.pricing.cost(judge_name, got[1])
        return got

    replies = await asyncio.gather(*(ask(p) for p in prompts))
    judge_usage: Usage | None = None
    for _, u in replies:
        judge_usage = _add(judge_usage, u)
    rec.judge_tokens = _usage_dict(judge_usage)
    rec.shadow_cost_usd += job.pricing.cost(judge_name, judge_usage)
    rec.judge_raw = [answer_text(r) for r, _ in replies]
    try:
        _verdict(rec, s.tie_margin)
    except JudgeParseError as exc:
        rec.error = f"judge: {exc}"
    return rec


def _verdict(rec: ShadowRecord, tie_margin: float) -> None:
    raw = rec.judge_raw
    if rec.judge_mode == "single":
        rec.local_score = J.parse_score(raw[0])
        if len(raw) > 1:
            rec.reference_score = J.parse_score(raw[1])
            rec.outcome = J.outcome_from_scores(rec.local_score, rec.reference_score, tie_margin)
        return
    share = J.combine_pairwise(J.parse_verdict(raw[0]), J.parse_verdict(raw[1]))
    rec.local_score, rec.reference_score = share, 1.0 - share
    rec.outcome = J.outcome_from_share(share)
