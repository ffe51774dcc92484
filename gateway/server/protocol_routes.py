"""HTTP handlers for the Anthropic Messages and OpenAI Responses endpoints.

``POST /v1/messages`` and ``POST /v1/responses`` go through the one pipeline with their
codec; token counting asks the backend the policy would choose (when it counts natively) and
the stored responses need no backend.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import replace

import orjson

from gateway.auth import Caller
from gateway.backends.base import UpstreamRequest
from gateway.errors import InvalidRequestError, NotFoundError, UpstreamError
from gateway.protocols.codecs import ANTHROPIC, ResponsesCodec, response_key
from gateway.protocols.request import Request
from gateway.routing.features import extract_features
from gateway.runtime import Runtime
from gateway.server.http import header_map, read_body, send_bytes
from gateway.server.pipeline import Pipeline, forward_headers, native_takers
from gateway.server.validate import parse_json

__all__ = ["ProtocolRoutes"]

RESPONSES_PREFIX = "/v1/responses/"
COUNT_HEADER = b"x-gateway-token-count"  # upstream: the backend's own count; estimate: ours
# A count the upstream takes longer than this for is answered with the estimate (a backend's
# own timeout is sized for generating answers).
COUNT_TIMEOUT_S = 10.0

log = logging.getLogger("gateway.request")


class ProtocolRoutes:
    def __init__(self, pipeline: Pipeline, responses: ResponsesCodec) -> None:
        self.pipeline = pipeline
        self.responses = responses

    async def messages(self, scope, receive, send) -> None:
        await self.pipeline.handle("chat", scope, receive, send, ANTHROPIC)

    async def responses_create(self, scope, receive, send) -> None:
        await self.pipeline.handle("chat", scope, receive, send, self.responses)

    async def count_tokens(self, scope, receive, send) -> None:
        """Anthropic's token count: the upstream's own where the policy would send this
        request natively to an Anthropic backend, else (or should that fail) the gateway's
        documented estimate. ``x-gateway-token-count`` says which. A body with no chat form
        is counted by the first candidate taking it natively, as it would be sent there."""
        rt = self.pipeline.store.runtime
        headers = header_map(scope)
        raw = await read_body(
            receive, rt.policy.server.max_body_bytes, headers.get("content-length")
        )
        caller = rt.keys.authenticate(headers)
        body = parse_json(raw)
        checked = body
        if not isinstance(body.get("max_tokens"), int):  # count_tokens does not need it
            checked = {**body, "max_tokens": 1}
        req = await ANTHROPIC.decode(checked, raw, caller.team)  # validated as a Messages body
        req.native, req.native_raw = body, raw  # the caller's own body goes up
        up = UpstreamRequest(
            operation="chat",
            body=body,
            raw=raw,
            headers=forward_headers(headers, ANTHROPIC),
            protocol="anthropic",
            reasoning=ANTHROPIC.reasons(body),
        )
        name = await self._chosen(rt, caller, req, up, headers)
        answer = None if name is None else await self._upstream_count(rt, name, up)
        outcome = "estimate" if answer is None else "upstream"
        self.pipeline.metrics.record_token_count(name or "none", outcome)
        if answer is not None:
            extra = [(COUNT_HEADER, b"upstream"), (b"x-gateway-backend", str(name).encode())]
            await send_bytes(send, 200, answer, extra=extra)
            return
        estimate = orjson.dumps({"input_tokens": req.prompt_tokens})
        await send_bytes(send, 200, estimate, extra=[(COUNT_HEADER, b"estimate")])

    async def _chosen(
        self,
        rt: Runtime,
        caller: Caller,
        req: Request,
        up: UpstreamRequest,
        headers: dict[str, str],
    ) -> str | None:
        """The backend a real request with this body would go to first: the same decision
        (rules, difficulty, data rules and provenance, a spent budget, open circuits; a body
        with no chat form only to the candidates taking ``up`` natively), without counting it
        against any limit. None: no backend would take it."""
        model = rt.policy.models.get(req.model)
        team = rt.policy.teams.get(caller.team)
        if model is None or not _may_use(caller.models, req.model):
            return None
        if team is not None and not _may_use(team.models, req.model):
            return None
        f = extract_features(req, team=caller.team, key_name=caller.key_name, headers=headers)
        f.self_hosted_only = await self.pipeline.limits.over_budget(rt, caller)
        names = self.pipeline.decide(rt, model, f, req).candidates
        if req.untranslatable is not None:  # a real request would go to these only
            names = native_takers(rt.backends, names, up)
        return names[0] if names else None

    async def _upstream_count(self, rt: Runtime, name: str, up: UpstreamRequest) -> bytes | None:
        """The upstream's own count when ``name`` takes ``up`` natively; None: estimate.

        The circuit breaker is read, never fed. A count goes up only while the circuit is
        closed: an open one already routed the decision elsewhere, and a half-open one keeps
        its single probe for real traffic (``allow()`` would take it, and a count's answer
        says nothing about ``/v1/messages``). Nor does a failed count count as a failure:
        it is another endpoint, with its own rate limits at Anthropic and missing from some
        Anthropic-compatible servers, so it must not take a backend that answers messages out
        of routing; the estimate stands in (no retries, a short timeout), as the shadow's
        side calls also leave the breaker alone."""
        backend, breaker = rt.backends.get(name), rt.breakers.get(name)
        if backend is None or breaker is None or breaker.state != "closed":
            return None
        if not backend.takes(up):
            return None
        timeout_s = min(COUNT_TIMEOUT_S, rt.configs[name].timeout_s)
        try:
            return await backend.count_tokens(replace(up, timeout_s=timeout_s))
        except UpstreamError as exc:
            log.warning("count_tokens on %s failed, answering the estimate: %s", name, exc.message)
            return None

    async def stored(self, scope, send, rid: str) -> None:
        """GET or DELETE /v1/responses/{id}, within the caller's team."""
        rt = self.pipeline.store.runtime
        caller = rt.keys.authenticate(header_map(scope))
        if not rid or "/" in rid:
            raise InvalidRequestError("expected /v1/responses/{response_id}", param="response_id")
        if scope["method"] == "DELETE":
            gone = await self.responses.state.delete_blob(response_key(caller.team, rid))
            if not gone:
                raise _not_found(rid)
            doc = {"id": rid, "object": "response", "deleted": True}
            await send_bytes(send, 200, orjson.dumps(doc))
            return
        stored = await self.responses.load(caller.team, rid)
        if stored is None:
            raise _not_found(rid)
        await send_bytes(send, 200, orjson.dumps(stored["response"]))


def _may_use(allowed: Collection[str] | None, model: str) -> bool:
    return allowed is None or model in allowed


def _not_found(rid: str) -> NotFoundError:
    return NotFoundError(f"response {rid!r} not found", param="response_id", code="not_found")
