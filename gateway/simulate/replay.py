"""Replaying logged requests through the policy's routing decision, offline.

Each request goes through the same steps as in ``gateway serve``: features, the difficulty
score when a rule of its model reads it, then ``route()``. The first candidate of the
decision is where it would go (backends are assumed healthy). For the cost-quality curve
each request is also routed on the other side of the "hard" threshold, so any threshold can
be evaluated afterwards without routing again.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from gateway.backends.base import Usage
from gateway.config.schema import VirtualModel
from gateway.errors import InvalidRequestError
from gateway.protocols.request import Operation
from gateway.routing.decide import REFUSALS, Decision, route
from gateway.routing.fallback import FallbackScorer
from gateway.routing.features import RequestFeatures, extract_features
from gateway.server.validate import validate
from gateway.simulate.context import SimContext, model_scoring
from gateway.simulate.log import LoggedRequest
from gateway.simulate.spend_cap import SpendCapReplay

log = logging.getLogger("gateway.simulate")

__all__ = ["Routed", "Side", "replay", "DEFAULT_COMPLETION_TOKENS"]

# Without the log's usage, a chat/completions answer is assumed this long (capped by the
# request's max_tokens): a typical chat answer is a few hundred tokens.
DEFAULT_COMPLETION_TOKENS = 350
SCORE_CHUNK = 256
PROGRESS_MIN_REQUESTS = 1000
ALWAYS_HARD, NEVER_HARD = -1.0, 2.0  # thresholds that force either side of a "hard" rule


@dataclass(slots=True, frozen=True)
class Side:
    """Where a request goes, and what it costs there."""

    rule: str
    backend: str
    self_hosted: bool
    cost: float


@dataclass(slots=True)
class Routed:
    req: LoggedRequest
    virtual_model: str
    prompt_tokens: int
    completion_tokens: int
    tokens_from_log: bool  # both counts came from the log's usage
    baseline_cost: float  # every token on the savings reference model
    chosen: Side | None  # None: no backend could take it (see error)
    hard: Side | None = None  # the decision if the request counts as hard ...
    soft: Side | None = None  # ... and if it does not (both None when no rule reads it)
    score: float | None = None
    threshold: float | None = None
    error: str | None = None


def _completion_tokens(req: LoggedRequest, f: RequestFeatures) -> int:
    if req.completion_tokens is not None:
        return req.completion_tokens
    if req.operation == "embeddings":
        return 0
    if f.max_output_tokens > 0:
        return min(f.max_output_tokens, DEFAULT_COMPLETION_TOKENS)
    return DEFAULT_COMPLETION_TOKENS


def _side(ctx: SimContext, d: Decision, usage: Usage) -> Side:
    backend = d.candidates[0]
    return Side(d.reason, backend, ctx.self_hosted(backend), ctx.pricing.cost(backend, usage))


def _scores(
    ctx: SimContext,
    reqs: Sequence[LoggedRequest],
    models: Sequence[str],
    threshold: float | None,
    bar: tqdm,
) -> tuple[list[float | None], int]:
    """Difficulty scores for the chat requests whose model reads them, batched by model.
    A scorer failure falls back to the heuristic for that batch and is counted, as in serve
    (the FallbackScorer does both)."""
    out: list[float | None] = [None] * len(reqs)
    todo: dict[str, list[int]] = {}
    scorers: dict[str, FallbackScorer] = {}
    for i, (r, m) in enumerate(zip(reqs, models, strict=True)):
        if r.operation != "chat" or m not in ctx.loaded.policy.models:
            continue
        found = model_scoring(ctx, m, threshold).scorer
        if found is not None:
            scorers[m] = found
            todo.setdefault(m, []).append(i)
    failures = 0
    for m, idx in todo.items():
        scorer = scorers[m]
        counted_before = scorer.failures  # FallbackScorer answers and counts failures
        for start in range(0, len(idx), SCORE_CHUNK):
            chunk = idx[start : start + SCORE_CHUNK]
            got = scorer.score_batch([reqs[i].body["messages"] for i in chunk])
            for i, s in zip(chunk, got, strict=True):
                out[i] = float(s)
            bar.update(len(chunk))
        failures += scorer.failures - counted_before
    return out, failures


def replay(
    ctx: SimContext,
    reqs: Sequence[LoggedRequest],
    model: str | None = None,
    threshold: float | None = None,
    progress: bool | None = None,
) -> tuple[list[Routed], int]:
    """Route every request; returns the outcomes and the number of scorer failures.
    ``model`` replays every request as if it asked for that virtual model; ``threshold``
    overrides the models' "hard" threshold."""
    policy = ctx.loaded.policy
    models = [model or str(r.body.get("model", "")) for r in reqs]
    show = (
        progress
        if progress is not None
        else (len(reqs) >= PROGRESS_MIN_REQUESTS and sys.stderr.isatty())
    )
    # log lines (the learned router says when it loads) go above the bars, not through them
    with logging_redirect_tqdm() if show else contextlib.nullcontext():
        with tqdm(
            total=len(reqs), desc="scoring", unit="req", disable=not show, leave=False
        ) as bar:
            scores, failures = _scores(ctx, reqs, models, threshold, bar)
        caps = {name: SpendCapReplay.for_model(ctx, name) for name in policy.models}
        order = sorted(
            range(len(reqs)),
            key=lambda i: (reqs[i].timestamp is None, reqs[i].timestamp or 0.0, i),
        )
        out: list[Routed | None] = [None] * len(reqs)
        for i in tqdm(order, desc="routing", unit="req", disable=not show, leave=False):
            out[i] = _one(ctx, reqs[i], models[i], scores[i], threshold, caps)
    if show:
        sys.stderr.flush()  # the cleared bars are gone before the table goes to stdout
    return out, failures  # type: ignore[return-value]


def _one(
    ctx: SimContext,
    req: LoggedRequest,
    vmodel: str,
    score: float | None,
    threshold: float | None,
    caps: dict,
) -> Routed:
    body = req.body if isinstance(req.body.get("model"), str) else {**req.body, "model": vmodel}
    try:
        parsed = validate(cast(Operation, req.operation), body)  # log.py checked it
    except InvalidRequestError as exc:  # the gateway would have answered 400
        return Routed(req, vmodel, 0, 0, False, 0.0, None, error=f"invalid request: {exc.message}")
    f = extract_features(parsed, team=req.team, key_name=req.key_name, headers=req.headers)
    f.virtual_model = vmodel
    p_tok = req.prompt_tokens if req.prompt_tokens is not None else f.prompt_tokens
    c_tok = _completion_tokens(req, f)
    # the log's cache reads/writes are assumed to recur wherever the request goes
    usage = Usage(p_tok, c_tok, req.cached_tokens, req.cache_write_tokens)
    res = Routed(
        req=req,
        virtual_model=vmodel,
        prompt_tokens=p_tok,
        completion_tokens=c_tok,
        tokens_from_log=req.prompt_tokens is not None and req.completion_tokens is not None,
        baseline_cost=ctx.pricing.reference_cost(usage),
        chosen=None,
    )
    vm = ctx.loaded.policy.models.get(vmodel)
    if vm is None:
        res.error = f"unknown model {vmodel!r} (replay as another with --model)"
        return res
    cap: SpendCapReplay | None = caps.get(vmodel)
    if score is None:
        chosen = _try(ctx, f, vm, usage)
    else:
        f.difficulty = res.score = score
        base = model_scoring(ctx, vmodel, threshold).threshold
        res.threshold = cap.threshold(base, req.timestamp) if cap is not None else base
        f.difficulty_threshold = ALWAYS_HARD
        hard = _try(ctx, f, vm, usage)
        f.difficulty_threshold = NEVER_HARD
        soft = _try(ctx, f, vm, usage)
        res.hard = hard if isinstance(hard, Side) else None
        res.soft = soft if isinstance(soft, Side) else None
        chosen = hard if score >= res.threshold else soft
    if isinstance(chosen, str):
        res.error = chosen
        return res
    res.chosen = chosen
    if cap is not None and not chosen.self_hosted:
        cap.record(chosen.cost, req.timestamp)
    return res


def _try(ctx: SimContext, f: RequestFeatures, vm: VirtualModel, usage: Usage) -> Side | str:
    """The decision's first candidate, or why no backend can take the request."""
    try:
        return _side(ctx, route(f, vm, ctx.views, ctx.governance), usage)
    except REFUSALS as exc:
        return exc.message
