"""Running a cascade rule for one non-streamed chat request.

1. Ask the rule's first (self-hosted) candidate with ``logprobs: true``.
2. Confidence of its answer (``gateway.cascade.confidence``).
3. At or above ``min_confidence``: that answer goes to the client (log-probs removed unless
   the client asked for them). Below: the remaining candidates are tried in order, as for
   any fallback; the first answer is never sent. The remaining candidates are the decision's,
   so data rules bind: a request that must stay home has no proprietary one to escalate to
   (result ``unescalated``, the local answer is returned).
4. If every escalation candidate fails, the local answer is returned (``escalation_failed``)
   rather than an error: it is a valid answer, only an unsure one.

Streams are not cascaded: a stream's first bytes would have to be held back until the whole
answer (or a prefix of N tokens) is scored, which removes what streaming is for, and a
prefix's confidence says little about the rest. Streaming requests on a cascade rule are
routed as usual; the README says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import orjson

from gateway.backends.base import UpstreamRequest, UpstreamResponse, Upstreams
from gateway.cascade.confidence import answer_confidence
from gateway.cascade.metrics import CascadeMetrics
from gateway.config.schema import Policy
from gateway.config.shadow import CascadeConfig
from gateway.errors import UpstreamError
from gateway.routing.decide import Decision

__all__ = ["CascadeInfo", "CascadeRules", "run_cascade"]


@dataclass(slots=True)
class CascadeInfo:
    result: str  # kept | observed | escalated | unescalated | escalation_failed
    confidence: float | None
    local_backend: str
    extra_cost_usd: float = 0.0  # the local answer's cost when it was not used
    extra_s: float = 0.0  # the local attempt's time when the answer came from elsewhere

    def headers(self) -> list[tuple[bytes, bytes]]:
        conf = "none" if self.confidence is None else f"{self.confidence:.4f}"
        return [
            (b"x-gateway-cascade", self.result.encode()),
            (b"x-gateway-cascade-confidence", conf.encode()),
            (b"x-gateway-cascade-extra-cost-usd", f"{self.extra_cost_usd:.8f}".encode()),
            (b"x-gateway-cascade-extra-ms", f"{self.extra_s * 1000:.1f}".encode()),
        ]


class CascadeRules:
    """(virtual model, rule name) -> its cascade settings, rebuilt when the policy changes."""

    def __init__(self, metrics: CascadeMetrics | None = None) -> None:
        self._of: tuple[int, dict[tuple[str, str], CascadeConfig]] = (0, {})
        self._metrics = metrics

    def get(self, policy: Policy, vmodel: str, rule: str) -> CascadeConfig | None:
        key, table = self._of
        if key != id(policy):
            table = {
                (m, r.name): r.cascade
                for m, model in policy.models.items()
                for r in model.rules
                if r.cascade is not None
            }
            self._of = (id(policy), table)
            if self._metrics is not None:
                self._metrics.prepare(list(table))
        return table.get((vmodel, rule)) if table else None


def _strip_logprobs(answer: dict[str, Any]) -> bytes:
    for choice in answer.get("choices") or ():
        if isinstance(choice, dict) and "logprobs" in choice:
            choice["logprobs"] = None
    return orjson.dumps(answer)


async def run_cascade(
    pipeline,
    rt,
    cfg: CascadeConfig,
    decision: Decision,
    req: UpstreamRequest,
    o,
    vmodel: str,
) -> tuple[UpstreamResponse, CascadeInfo]:
    """The answer to send and what the cascade did. ``pipeline`` supplies ``_attempt`` and
    ``_over_candidates`` (retries, breakers, fallbacks) and ``o`` is its Outcome."""
    first, rest = decision.candidates[0], decision.candidates[1:]
    client_logprobs = bool(req.body.get("logprobs"))
    # a full self-hosted fleet may pass the first try on only where the request may leave
    local_req = replace(
        req,
        body={**req.body, "logprobs": True},
        raw=None,
        spill_ok=bool(rest) and not decision.self_hosted_only,
    )
    backend = rt.backends[first]
    t = time.perf_counter()
    try:
        local = await pipeline._attempt(rt, first, lambda: backend.complete(local_req))
    except UpstreamError:
        o.upstream_s += time.perf_counter() - t
        if not rest:
            raise
        # the local backend is down: an ordinary fallback, no confidence to speak of
        resp = await pipeline._over_candidates(
            rt, replace(decision, candidates=rest), o, vmodel, Upstreams(req)
        )
        return resp, CascadeInfo("escalated", None, first, 0.0, time.perf_counter() - t)
    local_s = time.perf_counter() - t
    o.upstream_s += local_s
    o.backend = first
    if local.status != 200:
        return local, CascadeInfo("kept", None, first)
    answer = orjson.loads(local.body)
    conf = answer_confidence(answer, cfg.quantile)
    unsure = cfg.on_missing == "escalate" if conf is None else conf < cfg.min_confidence
    body = local.body if client_logprobs else _strip_logprobs(answer)
    kept = replace(local, body=body, doc=None if body is not local.body else local.doc)
    if not unsure:
        return kept, CascadeInfo("kept", conf, first)
    if cfg.observe_only:
        return kept, CascadeInfo("observed", conf, first)
    if not rest:
        return kept, CascadeInfo("unescalated", conf, first)
    local_cost = rt.pricing.cost(first, local.usage)
    try:
        resp = await pipeline._over_candidates(
            rt, replace(decision, candidates=rest), o, vmodel, Upstreams(req)
        )
    except UpstreamError:
        o.backend = first
        return kept, CascadeInfo("escalation_failed", conf, first)
    return resp, CascadeInfo("escalated", conf, first, local_cost, local_s)
