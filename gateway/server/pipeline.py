"""One request's way through the gateway.

read body -> authenticate -> parse + validate -> resolve virtual model -> limits
-> features (+ difficulty score if a rule needs it) -> route() -> cache lookup
-> candidates in order: circuit check, retries with backoff, fallback
-> respond (x-gateway-* headers) -> metrics, spend, cache store

A caller speaking another protocol (Anthropic Messages, Responses) goes the same way, its
codec at the edges. Each candidate is sent the translated OpenAI request, or, when the backend
takes the caller's protocol natively, the caller's own body (``Upstreams``); a native answer is
relayed as the upstream sent it, a translated one encoded by the codec. A body with no chat form
(``Request.untranslatable``) is routed by the same decision and sent only to the candidates
that take it natively (``_natives_only``), or refused in the caller's protocol.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.auth import Caller
from gateway.backends.base import Backend, UpstreamRequest, Upstreams, UpstreamStream, Usage
from gateway.backends.resilience import call_with_retries
from gateway.cache import CacheEntry, cache_decision, cache_key, completion_to_sse
from gateway.cache.sse import StreamAssembler
from gateway.cascade.run import CascadeRules, run_cascade
from gateway.config.schema import VirtualModel
from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    NoBackendError,
    NotFoundError,
    PermissionDeniedError,
    ProvenanceDeniedError,
    RateLimitError,
    UntranslatableError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from gateway.ledger.row import LedgerRow, new_request_id
from gateway.ledger.writer import LedgerWriter
from gateway.protocols.codecs import Codec, RelayedStream, StreamEncoder
from gateway.protocols.request import Operation, Request
from gateway.routing.decide import Decision, route
from gateway.routing.features import RequestFeatures, extract_features
from gateway.routing.tokens import count_with_tokenizer
from gateway.runtime import Runtime
from gateway.server.http import (
    BodyBudget,
    ClientDisconnected,
    end_body,
    end_stream_with_error,
    header_map,
    read_body,
    send_bytes,
    send_chunk,
    send_error,
    start_sse,
)
from gateway.server.limits import DEFAULT_COMPLETION_ESTIMATE, NO_LIMITS, Limits

if TYPE_CHECKING:  # the OpenTelemetry SDK is imported only when tracing is configured
    from gateway.tracing import Tracing
from gateway.server.validate import parse_json, validate
from gateway.shadow.service import ShadowService
from gateway.sse import DONE, frame, is_usage_only, json_of

log = logging.getLogger("gateway.request")

# Upstream answers that describe the client's request (relayed as-is); other 4xx (401, 403,
# 404 ...) describe the gateway's own credentials or config and fall back instead.
RELAYED_CLIENT_ERRORS = frozenset({400, 413, 422})
DEGRADED_HEADER = (b"x-gateway-degraded", b"proprietary-unconfigured")
NATIVE_HEADER = b"x-gateway-native"  # on answers relayed untranslated: the protocol
# on requests whose body has no chat form (native backends only): the part that has none
UNTRANSLATED_HEADER = b"x-gateway-untranslated"
PROTOCOL_NAMES = {"anthropic": "Anthropic Messages", "responses": "OpenAI Responses"}

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class Outcome:
    backend: str = ""
    reason: str = ""
    cache: str = "bypass"
    usage: Usage | None = None
    cost: float = 0.0
    savings: float = 0.0
    upstream_s: float = 0.0
    ttft_s: float | None = None
    started: bool = False  # response headers are out: errors can only go in-band now
    extra_headers: list[tuple[bytes, bytes]] | None = None  # e.g. the cascade's
    events: int = 0  # content events relayed to the client (what a cut stream produced)
    request_id: str = ""  # set when the ledger (or tracing) is on
    span: Any = None  # the request's trace span when tracing is on
    encoder: StreamEncoder | None = None  # the caller's stream encoder, once it started


@dataclass(slots=True)
class Call:
    """One routed request on its way to a backend: what ``_whole`` and ``_stream`` need."""

    rt: Runtime
    req: Request
    headers: dict[str, str]  # the client's, lower-case names
    decision: Decision
    features: RequestFeatures
    outcome: Outcome
    receive: Receive
    send: Send
    t0: float  # perf_counter() when the request arrived
    codec: Codec | None = None  # the caller's protocol, when it is not OpenAI's
    native: UpstreamRequest | None = None  # the caller's own body, for candidates taking it


def _fmt_headers(o: Outcome, overhead_ms: float) -> list[tuple[bytes, bytes]]:
    out = [
        (b"x-gateway-backend", o.backend.encode()),
        (b"x-gateway-route-reason", o.reason.encode()),
        (b"x-gateway-cache", o.cache.encode()),
        (b"x-gateway-cost-usd", f"{o.cost:.8f}".encode()),
        (b"x-gateway-overhead-ms", f"{overhead_ms:.3f}".encode()),
    ]
    if o.extra_headers:
        out += o.extra_headers
    if o.request_id:
        out.append((b"x-gateway-request-id", o.request_id.encode()))
    return out


class Pipeline:
    def __init__(
        self,
        store,
        metrics,
        cache,
        state,
        shadow: ShadowService | None = None,
        ledger: LedgerWriter | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.store = store  # gateway.server.policy_store.PolicyStore
        self.metrics = metrics
        self.cache = cache
        self.limits = Limits(state, metrics)
        self.bodies = BodyBudget()  # request bodies held by this process, across requests
        self.shadow = shadow
        self.cascades = CascadeRules(metrics.cascade)
        self.ledger = ledger  # None: no ledger configured, nothing recorded
        self.tracing = tracing  # None: tracing off

    # ------------------------------------------------------------ entry

    async def handle(
        self,
        operation: Operation,
        scope: dict[str, Any],
        receive,
        send,
        codec: Codec | None = None,
    ) -> None:
        """One request; ``codec`` (None: OpenAI's own API) translates another protocol's
        body in and the answer out, around the same pipeline."""
        t0 = time.perf_counter()
        rt: Runtime = self.store.runtime
        headers = header_map(scope)
        o = Outcome()
        vmodel = "unknown"
        team = "default"
        status = 200
        caller: Caller | None = None
        f: RequestFeatures | None = None
        adm = NO_LIMITS
        ledger = self.ledger
        ts = 0.0
        if ledger is not None:
            ts = time.time()
            o.request_id = new_request_id()
        tracing = self.tracing
        if tracing is not None:
            o.request_id = o.request_id or new_request_id()
            o.span = tracing.start_request(operation, "", headers)
        held = 0  # body bytes charged to self.bodies, given back in finally
        try:
            # the key comes from the headers: a keyless caller gets its 401 before we read
            # (and hold) a byte of its body
            caller = rt.keys.authenticate(headers)
            team = caller.team
            srv = rt.policy.server
            raw = await read_body(
                receive,
                srv.max_body_bytes,
                headers.get("content-length"),
                timeout_s=srv.body_timeout_s,
                budget=self.bodies,
                budget_limit=srv.max_inflight_body_bytes,
            )
            held = len(raw)
            if codec is None:
                req = validate(operation, parse_json(raw), raw)
            else:
                req = await codec.decode(parse_json(raw), raw, team)
            vmodel = req.model
            if o.span is not None:
                o.span.update_name(f"{o.span.name}{vmodel}")
            model = rt.policy.models.get(vmodel)
            if model is None:
                vmodel = "unknown"
                raise NotFoundError(
                    f"model {req.model!r} does not exist; see GET /v1/models", param="model"
                )
            if caller.models is not None and vmodel not in caller.models:
                raise PermissionDeniedError(
                    f"this API key may not use model {vmodel!r}", param="model"
                )
            team_cfg = rt.policy.teams.get(team)
            if team_cfg is not None and team_cfg.models is not None:
                if vmodel not in team_cfg.models:
                    raise PermissionDeniedError(
                        f"team {team!r} may not use model {vmodel!r}", param="model"
                    )
            f = extract_features(req, team=team, key_name=caller.key_name, headers=headers)
            adm = await self.limits.check(
                rt, caller, f.prompt_tokens + (f.max_output_tokens or DEFAULT_COMPLETION_ESTIMATE)
            )
            f.self_hosted_only = adm.self_hosted_only
            decision = self.decide(rt, model, f, req)
            if decision.refused:
                self.metrics.record_provenance_skips(decision.refused)
            o.reason = decision.reason
            if decision.degraded:  # the rule's backends are unconfigured: self-hosted serves it
                o.extra_headers = [*(o.extra_headers or ()), DEGRADED_HEADER]
                self.metrics.record_degraded(vmodel, decision.reason)
            stream = req.stream and operation != "embeddings"
            native = None
            if codec is not None:
                native = self._native_request(rt, codec, req, headers, decision, stream)
            if req.untranslatable is not None:
                why = req.untranslatable
                decision = self._natives_only(rt, req.protocol, why, decision, native, o)
            call = Call(rt, req, headers, decision, f, o, receive, send, t0, codec, native)
            async with asyncio.timeout(rt.policy.server.request_timeout_s):
                if stream:
                    status = await self._stream(call)
                else:
                    status = await self._whole(call)
        except ClientDisconnected:
            status = 499
        except GatewayError as exc:
            status = exc.status
            self.metrics.record_error(vmodel, o.backend or "none", type(exc).__name__)
            if isinstance(exc, ProvenanceDeniedError):
                self.metrics.record_provenance_refusal(exc.rules)
            hdrs = _fmt_headers(o, (time.perf_counter() - t0) * 1000)
            if isinstance(exc, UpstreamError) and exc.upstream_status in RELAYED_CLIENT_ERRORS:
                # the upstream judged the request itself: the client gets its answer as-is
                status = exc.upstream_status
                if codec is None:
                    relayed = exc.body or InvalidRequestError(exc.message).to_json()
                else:  # in the caller's protocol: the upstream spoke OpenAI's
                    relayed = codec.error_json(InvalidRequestError(_upstream_message(exc)))
                await send_bytes(send, status, relayed, extra=hdrs)
            elif o.started and codec is not None:  # a codec's stream already began
                await _end_encoded(send, o.encoder or codec.stream(req), exc)
            elif o.started:  # SSE headers are out: a second response cannot start
                status = 502 if isinstance(exc, UpstreamError) else exc.status
                await end_stream_with_error(send, exc)
            else:
                await send_error(send, exc, hdrs, codec.error_json(exc) if codec else None)
        except TimeoutError:
            status = 504
            self.metrics.record_error(vmodel, o.backend or "none", "RequestTimeout")
            late = UpstreamTimeoutError("the request took longer than server.request_timeout_s")
            if o.started:  # mid-stream: end the stream with an error event
                if codec is None:
                    await end_body(send, frame(late.to_json()))
                else:  # numbered after what the stream's encoder already sent
                    await _end_encoded(send, o.encoder or codec.stream(req), late)
            else:
                await send_error(send, late, None, codec.error_json(late) if codec else None)
        except asyncio.CancelledError:
            status = 499  # shutdown or an outer cancel: the answer never completed
            raise
        except Exception:
            status = 500
            self.metrics.record_error(vmodel, o.backend or "none", "InternalError")
            raise  # the app's last-resort handler logs it and answers what it still can
        finally:
            self.bodies.release(held)
            total = time.perf_counter() - t0
            self.metrics.record_request(
                virtual_model=vmodel,
                backend=o.backend or "none",
                route_reason=o.reason or "none",
                status=status,
                cache=o.cache,
                team=team,
                duration_s=total,
                upstream_s=o.upstream_s,
                overhead_s=max(0.0, total - o.upstream_s),
                usage=o.usage,
                cost_usd=o.cost,
                savings_usd=o.savings,
                ttft_s=o.ttft_s,
                protocol="openai" if codec is None else codec.protocol,
            )
            self_hosted = o.cache == "hit" or (
                rt.configs[o.backend].self_hosted if o.backend in rt.configs else True
            )
            if caller is not None and (o.cost > 0 or adm.reserved):
                used = o.usage.total_tokens if o.usage is not None else 0
                await self.limits.settle(rt, caller, adm, used, vmodel, o.cost, self_hosted)
            if o.span is not None and tracing is not None:
                cfg = rt.configs.get(o.backend)
                tracing.finish(
                    o.span,
                    {
                        "gen_ai.request.model": vmodel,
                        "gen_ai.response.model": cfg.model if cfg is not None else None,
                        "gen_ai.provider.name": tracing.provider_name(cfg) if cfg else None,
                        "gen_ai.usage.input_tokens": o.usage.prompt_tokens if o.usage else None,
                        "gen_ai.usage.output_tokens": o.usage.completion_tokens
                        if o.usage
                        else None,
                        "gateway.route.rule": o.reason or None,
                        "gateway.backend": o.backend or None,
                        "gateway.cache": o.cache,
                        "gateway.cost_usd": o.cost,
                        "gateway.savings_usd": o.savings,
                        "gateway.team": team,
                        "gateway.request_id": o.request_id,
                    },
                    status,
                )
            if ledger is not None and caller is not None:
                ledger.record(
                    LedgerRow(
                        ts,
                        o.request_id,
                        team,
                        caller.key_name,
                        vmodel,
                        codec.protocol if codec is not None else operation,
                        o.reason or "none",
                        o.backend or "none",
                        rt.configs[o.backend].model if o.backend in rt.configs else "",
                        self_hosted,
                        status,
                        f.stream if f is not None else False,
                        o.usage.prompt_tokens if o.usage is not None else 0,
                        o.usage.completion_tokens if o.usage is not None else 0,
                        o.usage.cached_tokens if o.usage is not None else 0,
                        o.usage.cache_write_tokens if o.usage is not None else 0,
                        o.cost,
                        o.savings,
                        total * 1000.0,
                        max(0.0, total - o.upstream_s) * 1000.0,
                        o.cache,
                        f.difficulty if f is not None else None,
                    )
                )

    # ------------------------------------------------------------ routing inputs

    def decide(
        self, rt: Runtime, model: VirtualModel, f: RequestFeatures, req: Request
    ) -> Decision:
        """Where the request goes: difficulty scored and exact tokens counted where needed."""
        self._score(rt, f, req)
        self._exact_tokens(rt, f, req)
        return route(f, model, rt.views(), rt.governance)

    def _score(self, rt: Runtime, f: RequestFeatures, req: Request) -> None:
        routing = rt.routing[f.virtual_model]
        if routing.scorer is None or f.operation != "chat":
            return
        failures = routing.scorer.failures  # FallbackScorer: never raises, counts fallbacks
        f.difficulty = routing.scorer.score(req.messages)
        if routing.scorer.failures != failures:
            self.metrics.record_router_failure()
        f.difficulty_threshold = self.limits.threshold(rt, f.virtual_model, routing.base_threshold)

    def _exact_tokens(self, rt: Runtime, f: RequestFeatures, req: Request) -> None:
        """Count with a backend's own tokenizer only when the estimate is near its window."""
        for name, path in rt.tokenizers.items():
            window = rt.views()[name].context_window
            if window and f.prompt_tokens + f.max_output_tokens > window * 0.7:
                f.exact_tokens[name] = count_with_tokenizer(path, req)

    # ------------------------------------------------------------ accounting

    def _account(self, rt: Runtime, o: Outcome, usage: Usage | None) -> None:
        o.usage = usage
        if usage is None:
            return
        o.cost = rt.pricing.cost(o.backend, usage)  # cache reads/writes at their prices
        o.savings = rt.pricing.savings(usage, o.cost)

    def _cache_plan(self, c: Call, native: UpstreamRequest | None) -> tuple[str, str | None]:
        if self.cache is None:
            return "bypass", None
        if native is not None and c.rt.backends[c.decision.candidates[0]].takes(native):
            # the first choice answers natively, not with a chat completion: nothing to look up
            # (a translated answer would drop what native keeps) and nothing to store
            self.metrics.record_cache("bypass")
            return "bypass", None
        req = c.req
        mode = cache_decision(
            req.body, c.headers.get("cache-control"), c.rt.policy.cache, req.operation
        )
        if mode == "bypass":
            self.metrics.record_cache("bypass")
            return mode, None
        return mode, cache_key(req.operation, req.body, c.features.team, req.protocol)

    async def _lookup(
        self, mode: str, key: str | None, allowed: frozenset[str] | None
    ) -> CacheEntry | None:
        if mode != "use":
            return None
        entry = await self.cache.get(key)
        if entry is not None and allowed is not None and entry.backend not in allowed:
            entry = None  # answered by a backend a provenance rule now refuses this request
        if entry is not None:
            self.metrics.record_cache("hit")
        elif self.cache.available:
            self.metrics.record_cache("miss")
        # else: the store is down; the cache counted the error itself, and this is a bypass
        return entry

    # ------------------------------------------------------------ calling backends

    async def _attempt(self, rt: Runtime, name: str, fn):
        """Call one backend with its retry policy; returns fn's result or raises UpstreamError."""
        breaker = rt.breakers[name]
        if not breaker.allow():
            raise UpstreamUnavailableError(f"backend {name!r}: circuit open")
        cfg = rt.configs[name]
        try:
            return await call_with_retries(
                fn,
                cfg.retry,
                breaker,
                on_retry=lambda _attempt, _exc: self.metrics.record_retry(name),
            )
        finally:
            self.metrics.set_circuit_state(name, breaker.state)

    async def _over_candidates(
        self,
        rt: Runtime,
        decision: Decision,
        o: Outcome,
        vmodel: str,
        ups: Upstreams,
        stream: bool = False,
    ) -> Any:
        """The first candidate's answer that comes (an ``UpstreamResponse``, or with ``stream``
        an open ``UpstreamStream``), after retries and fallbacks."""
        last: UpstreamError | None = None
        n = len(decision.candidates)
        for i, name in enumerate(decision.candidates):
            backend = rt.backends[name]
            req = ups.pick(backend)
            # a full self-hosted fleet may pass this request on (spill-over) only if it may leave
            req.spill_ok = not decision.self_hosted_only and i + 1 < n
            t = time.perf_counter()
            op = backend.open_stream if stream else backend.complete
            call: Callable[[], Awaitable[Any]] = functools.partial(op, req)
            if o.span is not None and self.tracing is not None:
                call = self.tracing.wrap_attempt(o.span, name, rt.configs[name], req.headers, call)
            try:
                result = await self._attempt(rt, name, call)
            except UpstreamError as exc:
                o.upstream_s += time.perf_counter() - t
                o.backend = name
                if exc.upstream_status in RELAYED_CLIENT_ERRORS:
                    raise
                last = exc
                log.warning(
                    "backend %s failed (%s: %s%s)",
                    name,
                    type(exc).__name__,
                    exc.message,
                    f"; {exc.detail}" if exc.detail else "",
                )
                if i + 1 < len(decision.candidates):
                    self.metrics.record_fallback(vmodel, name, decision.candidates[i + 1])
                continue
            o.upstream_s += time.perf_counter() - t
            o.backend = name
            return result
        if last is None:
            raise NoBackendError("no backend could be tried")
        if decision.self_hosted_only:
            raise NoBackendError(
                f"request must stay on self-hosted backends (rule {decision.reason!r}) and none could serve it: {last.message}"
            ) from last
        if (
            last.upstream_status == 429
        ):  # every candidate is rate-limiting us: tell the client to back off
            raise RateLimitError(
                f"upstream rate limit: {last.message}",
                code="upstream_rate_limited",
                retry_after=last.retry_after,
            ) from last
        raise last

    async def _unless_disconnected(self, call, receive, o: Outcome, vmodel: str):
        """Await ``call`` unless the client goes away first: then cancel it, which closes the
        upstream request (a non-streamed generation would otherwise run on for nobody).
        One watcher task and a callback, not a second task plus asyncio.wait: this is the hot path."""
        me = asyncio.current_task()
        if me is None:
            raise RuntimeError("_unless_disconnected must run inside a task")
        gone = False

        def on_message(w: asyncio.Future) -> None:
            nonlocal gone
            if (
                not w.cancelled()
                and w.exception() is None
                and w.result()["type"] == "http.disconnect"
            ):
                gone = True
                me.cancel()

        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(on_message)
        try:
            result = await call
        except asyncio.CancelledError:
            if not gone:
                raise
        finally:
            watcher.remove_done_callback(on_message)
            watcher.cancel()
        if not gone:  # nothing can set it between the await and here: no yield point
            return result
        me.uncancel()  # our own cancel, taken back; an outer one (timeout, shutdown) still counts
        self.metrics.record_error(vmodel, o.backend or "none", "ClientDisconnected")
        raise ClientDisconnected

    async def _whole(self, c: Call) -> int:
        rt, req, o = c.rt, c.req, c.outcome
        native_up = c.native
        mode, key = self._cache_plan(c, native_up)
        entry = await self._lookup(mode, key, c.decision.allowed)
        if entry is not None:
            return await self._send_cached(c, entry, stream=False)
        o.cache = "miss" if key and self.cache.available else "bypass"
        up = None
        if req.untranslatable is None:  # else: no chat form, only native candidates are left
            up = UpstreamRequest(
                operation=req.operation, body=req.body, raw=req.raw, headers=_forward(c.headers)
            )
        f, decision, vmodel = c.features, c.decision, c.features.virtual_model
        ticket = self.shadow.ticket(rt, f, decision) if self.shadow is not None else None
        cascade = self.cascades.get(rt.policy, vmodel, decision.reason)
        info = None
        if cascade is not None and up is not None and req.operation == "chat":
            call = run_cascade(self, rt, cascade, decision, up, o, vmodel)
            resp, info = await self._unless_disconnected(call, c.receive, o, vmodel)
            o.extra_headers = info.headers()
            self.metrics.cascade.record(
                vmodel,
                decision.reason,
                info.result,
                info.confidence,
                info.extra_cost_usd,
                info.extra_s if info.result == "escalated" else None,
            )
        else:
            ups = Upstreams(up, native_up)
            call = self._over_candidates(rt, decision, o, vmodel, ups)
            resp = await self._unless_disconnected(call, c.receive, o, vmodel)
        self._account(rt, o, resp.usage)
        native = resp.protocol != "openai"
        if native:  # relayed as the upstream sent it; never cached or shadowed (chat forms)
            self._mark_native(o, resp.protocol)
            ticket, key = None, None
            out = resp.body
            if c.codec is not None and c.codec.keeps_answers and resp.status == 200:
                await c.codec.answered(req, orjson.loads(resp.body), f.team)
        else:
            out = resp.body if c.codec is None else await self._encoded(c, resp.body, resp.doc)
        overhead_ms = (time.perf_counter() - c.t0 - o.upstream_s) * 1000
        await send_bytes(c.send, resp.status, out, extra=_fmt_headers(o, overhead_ms))
        if ticket is not None and self.shadow is not None and resp.status == 200:
            self.shadow.submit(
                ticket,
                rt,
                f,
                decision,
                req.body,
                o.backend,
                resp.body,
                resp.usage,
                info.confidence if info is not None else None,
            )
        if key is not None and resp.status == 200:
            await self.cache.set(key, _entry(resp.body, resp.model, o))
        return resp.status

    async def _encoded(self, c: Call, body: bytes, doc: dict[str, Any] | None = None) -> bytes:
        """A whole chat completion (``doc``: parsed already) in the caller's protocol (and
        noted by its codec)."""
        codec = c.codec
        assert codec is not None  # noqa: S101 - callers check
        answer = codec.whole(c.req, doc if doc is not None else orjson.loads(body))
        await codec.answered(c.req, answer, c.features.team)
        return orjson.dumps(answer)

    async def _send_cached(self, c: Call, entry: CacheEntry, stream: bool) -> int:
        rt, o, send = c.rt, c.outcome, c.send
        o.backend, o.cache = entry.backend, "hit"
        if entry.backend not in rt.configs:  # cached under an older policy
            o.backend = "cache"
        o.usage = Usage(entry.prompt_tokens, entry.completion_tokens)
        o.savings = rt.pricing.reference_cost(o.usage)
        hdrs = _fmt_headers(o, (time.perf_counter() - c.t0) * 1000)
        if not stream:
            body = entry.body if c.codec is None else await self._encoded(c, entry.body)
            await send_bytes(send, 200, body, extra=hdrs)
            return 200
        await start_sse(send, hdrs)
        if c.codec is None:
            events = completion_to_sse(entry.body, c.req.include_usage)
        else:
            enc = o.encoder = c.codec.stream(c.req)
            events = []
            for event in completion_to_sse(entry.body, True):
                chunk = json_of(event)
                events += enc.feed(chunk) if isinstance(chunk, dict) else ()
            events += enc.finish()
            await self._stream_answered(c, enc)
        await end_body(send, b"".join(events))  # the whole answer is here: one write
        return 200

    async def _stream_answered(self, c: Call, enc: StreamEncoder) -> None:
        answer = getattr(enc, "response", None)  # encoders that assemble the caller's answer
        if c.codec is not None and answer is not None:
            await c.codec.answered(c.req, answer, c.features.team)

    async def _stream(self, c: Call) -> int:
        rt, req, o, f, send = c.rt, c.req, c.outcome, c.features, c.send
        client_usage = req.include_usage  # codecs read the usage chunk themselves, never relay it
        native_up = c.native
        mode, key = self._cache_plan(c, native_up)
        entry = await self._lookup(mode, key, c.decision.allowed)
        if entry is not None:
            return await self._send_cached(c, entry, stream=True)
        o.cache = "miss" if key and self.cache.available else "bypass"
        chat = self._chat_stream(c) if req.untranslatable is None else None  # None: no chat form
        ups = Upstreams(chat, native_up)
        t_open = time.perf_counter()
        stream: UpstreamStream = await self._over_candidates(
            rt, c.decision, o, f.virtual_model, ups, stream=True
        )
        o.ttft_s = time.perf_counter() - t_open
        p_in, _ = rt.pricing.prices[o.backend]
        o.cost = f.prompt_tokens * p_in  # the header can only carry the prompt side of the cost
        native = stream.protocol != "openai"
        if native:  # the upstream's own events, relayed; never cached or shadowed (chat forms)
            self._mark_native(o, stream.protocol)
            key = None
        overhead_ms = (time.perf_counter() - c.t0 - o.upstream_s) * 1000
        await start_sse(send, _fmt_headers(o, overhead_ms))
        o.started = True
        enc: StreamEncoder | None = None
        if c.codec is not None:  # a relayed native stream needs only the codec's error event
            enc = RelayedStream(c.codec, lambda: stream.relayed) if native else c.codec.stream(req)
        o.encoder = enc
        ticket = None
        if self.shadow is not None and not native:
            ticket = self.shadow.ticket(rt, f, c.decision)
        assembler = StreamAssembler() if key is not None or ticket is not None else None
        relay = self._pump(stream, send, client_usage or native, assembler, o, enc, native)
        pump = asyncio.ensure_future(relay)
        watcher = asyncio.ensure_future(c.receive())
        try:
            done, _ = await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pump.done():  # the client went away (or we were cancelled): stop the upstream
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
            watcher.cancel()
            await stream.aclose()
        if pump in done and not pump.cancelled():
            ok = pump.result()
            # broken after the first byte: the upstream failed, not the client
            status = 200 if ok else 502
        else:
            self.metrics.record_error(f.virtual_model, o.backend, "ClientDisconnected")
            ok, status = False, 499
        o.upstream_s += time.perf_counter() - t_open - (o.ttft_s or 0.0)
        usage = stream.usage
        if usage is None and o.events:  # cut before the usage chunk: charge what it produced
            usage = Usage(f.prompt_tokens, o.events)
        self._account(rt, o, usage)
        if ok and assembler is not None:
            full = assembler.result()
            if full is not None and ticket is not None and self.shadow is not None:
                self.shadow.submit(
                    ticket, rt, f, c.decision, req.body, o.backend, full, stream.usage
                )
            if full is not None and key is not None:
                await self.cache.set(key, _entry(full, stream.model, o))
        if ok and native and c.codec is not None and stream.answer is not None:
            await c.codec.answered(req, stream.answer, f.team)  # e.g. a Responses answer stored
        elif ok and enc is not None:
            await self._stream_answered(c, enc)
        return status

    def _chat_stream(self, c: Call) -> UpstreamRequest:
        req = c.req
        up_body, up_raw = req.body, req.raw
        if not req.include_usage:
            # ask for usage anyway (for cost), and strip it from the client's stream
            so = req.body.get("stream_options") or {}
            up_body = {**req.body, "stream_options": {**so, "include_usage": True}}
            up_raw = None
        return UpstreamRequest(
            operation=req.operation,
            body=up_body,
            raw=up_raw,
            stream=True,
            headers=_forward(c.headers),
        )

    async def _pump(
        self,
        stream: UpstreamStream,
        send,
        client_usage: bool,
        assembler,
        o: Outcome,
        enc: StreamEncoder | None = None,
        native: bool = False,
    ) -> bool:
        """Relay events (through ``enc`` for another protocol, unless the stream is already in
        the caller's protocol: ``native``); a failure after the first byte ends the stream
        with an error event (in the caller's protocol)."""
        try:
            async for event in stream:
                if event == DONE:
                    break
                if assembler is not None:
                    assembler.feed(event)
                if enc is not None and not native:
                    chunk = stream.last_json  # parsed already by most streams
                    if chunk is None:
                        chunk = json_of(event)
                    outs = enc.feed(chunk) if isinstance(chunk, dict) else None
                    if outs:  # one write for the events of one chunk
                        await send_chunk(send, b"".join(outs))
                        o.events += 1
                    continue
                if not client_usage and is_usage_only(event):
                    continue
                o.events += 1
                await send_chunk(send, event)
        except UpstreamError as exc:
            log.warning("stream from %s failed after the first byte: %s", o.backend, exc.message)
            self.metrics.record_stream_error(o.backend)
            if enc is not None:
                await _end_encoded(send, enc, exc)
            else:
                await end_body(send, frame(exc.to_json()) + DONE)
            return False
        if native:
            last = b""  # the upstream's own last event is out
        elif enc is not None:
            last = b"".join(enc.finish())
        else:
            last = DONE
        await end_body(send, last)  # the last events and the end of the body: one write
        return True

    # ------------------------------------------------------------ native pass-through

    def _native_request(
        self,
        rt: Runtime,
        codec: Codec,
        req: Request,
        headers: dict[str, str],
        decision: Decision,
        stream: bool,
    ) -> UpstreamRequest | None:
        """The caller's own body for candidates that take its protocol natively; None when no
        candidate does (or the codec says this request cannot go natively)."""
        backends = rt.backends
        if not any(codec.protocol in backends[n].native for n in decision.candidates):
            return None
        got = codec.native_body(req)
        if got is None:
            return None
        body, raw = got
        up = UpstreamRequest(
            operation="chat",
            body=body,
            raw=raw,
            stream=stream,
            headers=forward_headers(headers, codec),
            protocol=codec.protocol,  # type: ignore[arg-type]
            reasoning=codec.reasons(body),
        )
        # e.g. reasoning asked of a model that refuses it: every candidate translates
        return up if native_takers(backends, decision.candidates, up) else None

    def _natives_only(
        self,
        rt: Runtime,
        protocol: str,
        why: UntranslatableError,
        decision: Decision,
        native: UpstreamRequest | None,
        o: Outcome,
    ) -> Decision:
        """A body with no chat form (``why``) goes only to the candidates that take it natively,
        in the decision's order (fallbacks and retries included); with none, it is refused
        naming the part that has no chat form."""
        o.extra_headers = [
            *(o.extra_headers or ()),
            (UNTRANSLATED_HEADER, (why.param or "body").encode()),
        ]
        keep = native_takers(rt.backends, decision.candidates, native)
        self.metrics.record_untranslated(protocol, "native" if keep else "refused")
        if not keep:
            tried = ", ".join(decision.candidates)
            raise UntranslatableError(
                f"{why.message}; none of the backends this request may go to ({tried}) takes"
                f" {PROTOCOL_NAMES.get(protocol, protocol)} natively"
                " (see native_protocols in the policy)",
                param=why.param,
            )
        dropped = tuple((n, "needs translation") for n in decision.candidates if n not in keep)
        return dataclasses.replace(decision, candidates=keep, skipped=decision.skipped + dropped)

    def _mark_native(self, o: Outcome, protocol: str) -> None:
        o.cache = "bypass"  # a native answer is not a chat completion: not cached
        o.extra_headers = [*(o.extra_headers or ()), (NATIVE_HEADER, protocol.encode())]


def native_takers(
    backends: dict[str, Backend], candidates: tuple[str, ...], up: UpstreamRequest | None
) -> tuple[str, ...]:
    """The candidates that take the native request ``up`` as it is, in order."""
    if up is None:
        return ()
    return tuple(n for n in candidates if backends[n].takes(up))


async def _end_encoded(send: Send, enc: StreamEncoder, exc: GatewayError) -> None:
    """End a stream in the caller's protocol with its error event (one write)."""
    await end_body(send, b"".join(enc.error(exc)))


def _upstream_message(exc: UpstreamError) -> str:
    """The upstream's own words for a rejected request (its OpenAI-format error body)."""
    try:
        err = orjson.loads(exc.body or b"{}").get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return exc.message
    return err.get("message", exc.message) if isinstance(err, dict) else exc.message


_FORWARDED = ("x-request-id", "traceparent")


def forward_headers(headers: dict[str, str], codec: Codec | None = None) -> dict[str, str]:
    """What an upstream gets of the client's headers: request id and trace context, and for
    a native request the caller's protocol headers (e.g. anthropic-version and -beta)."""
    out = _forward(headers)
    for h in codec.native_headers if codec is not None else ():
        if h in headers:
            out[h] = headers[h]
    return out


def _forward(headers: dict[str, str]) -> dict[str, str]:
    return {h: headers[h] for h in _FORWARDED if h in headers}


def _entry(body: bytes, model: str, o: Outcome) -> CacheEntry:
    u = o.usage or Usage()
    return CacheEntry(
        body=body,
        model=model,
        backend=o.backend,
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        created_at=time.time(),
    )
