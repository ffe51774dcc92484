"""The gateway as an ASGI application: a path table, a lifespan, and small handlers."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import orjson

from gateway.backends.fleet import FleetBackend, FleetCollector
from gateway.cache import ResponseCache, build_cache
from gateway.config.explain import availability
from gateway.config.schema import LedgerConfig
from gateway.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    UpstreamUnavailableError,
)
from gateway.ledger.db import DB_ERRORS
from gateway.ledger.metrics import LedgerMetrics
from gateway.ledger.report import UsageQuery, parse_day, usage
from gateway.ledger.writer import LedgerWriter

if TYPE_CHECKING:
    from gateway.tracing import Tracing
from gateway.metrics import GatewayMetrics
from gateway.protocols.codecs import ANTHROPIC, ResponsesCodec
from gateway.router.threads import RouterThreads
from gateway.server.guard import ResponseGuard
from gateway.server.http import header_map, send_bytes, send_error
from gateway.server.pipeline import Pipeline
from gateway.server.policy_store import PolicyStore
from gateway.server.protocol_routes import RESPONSES_PREFIX, ProtocolRoutes
from gateway.shadow.service import ShadowService
from gateway.state import SharedState, build_state

log = logging.getLogger("gateway")

READY_CACHE_S = 2.0
PROBE_TIMEOUT_S = 2.0


@dataclass(slots=True)
class Settings:
    policy_path: Path
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    watch_interval_s: float = 1.0  # 0: do not watch the policy file
    freeze_heap: bool = False  # gc.freeze() after start-up: only in a process the gateway owns
    router_threads: RouterThreads | None = (
        None  # torch's threads for the learned router; None: torch's own
    )


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"

    def __init__(self, message: str, *, allow: str) -> None:
        super().__init__(message)
        self.allow = allow  # the Allow header a 405 must carry (RFC 9110 15.5.6)


def _headers_only(send):
    """A ``send`` for HEAD: the GET answer's status and headers (Content-Length included), no body."""

    async def head_send(message) -> None:
        if message["type"] == "http.response.body":
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return head_send


class GatewayApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # set by startup(); read through the properties below
        self._store: PolicyStore | None = None
        self._pipeline: Pipeline | None = None
        self._protocols: ProtocolRoutes | None = None
        self._metrics: GatewayMetrics | None = None
        self._cache: ResponseCache | None = None
        self._state: SharedState | None = None
        self._shadow: ShadowService | None = None
        self._ready: tuple[float, bool, list[str]] = (0.0, False, [])
        self._routes = {
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/completions": ("POST", self._completions),
            "/v1/embeddings": ("POST", self._embeddings),
            "/v1/messages": ("POST", self._messages),
            "/v1/messages/count_tokens": ("POST", self._count_tokens),
            "/v1/responses": ("POST", self._responses_create),
            "/v1/models": ("GET", self._models),
            "/health": ("GET", self._health),
            "/ready": ("GET", self._ready_handler),
            "/metrics": ("GET", self._metrics_handler),
            "/admin/reload": ("POST", self._admin_reload),
            "/admin/usage": ("GET", self._admin_usage),
        }
        self.ledger: LedgerWriter | None = None
        self.tracing: Tracing | None = None

    @property
    def store(self) -> PolicyStore:
        if self._store is None:
            raise RuntimeError("the gateway has not started (ASGI lifespan startup)")
        return self._store

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise RuntimeError("the gateway has not started (ASGI lifespan startup)")
        return self._pipeline

    @property
    def metrics(self) -> GatewayMetrics:
        if self._metrics is None:
            raise RuntimeError("the gateway has not started (ASGI lifespan startup)")
        return self._metrics

    @property
    def shadow(self) -> ShadowService:
        if self._shadow is None:
            raise RuntimeError("the gateway has not started (ASGI lifespan startup)")
        return self._shadow

    # ------------------------------------------------------------ ASGI

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope, receive, send) -> None:
        guard = ResponseGuard(send)
        try:
            await self._route(scope, receive, guard)
        except GatewayError as exc:  # raised after the answer began (see _route)
            log.warning("error after the response started on %s: %s", scope["path"], exc)
            await guard.fail(exc)
        except Exception:  # noqa: BLE001 - the last resort: logged with its traceback, answered
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await guard.fail()

    async def _route(self, scope, receive, guard: ResponseGuard) -> None:
        send = guard.send
        path = scope["path"]
        entry = self._routes.get(path.rstrip("/") if len(path) > 1 else path)
        try:
            if entry is None:
                if path.startswith("/v1/models/") and scope["method"] == "GET":
                    await self._model(scope, send, path.removeprefix("/v1/models/"))
                    return
                if path.startswith(RESPONSES_PREFIX) and scope["method"] in ("GET", "DELETE"):
                    await self.protocols.stored(scope, send, path.removeprefix(RESPONSES_PREFIX))
                    return
                raise NotFoundError(f"no route for {scope['method']} {path}", code="not_found")
            method, handler = entry
            if scope["method"] != method:
                if scope["method"] == "HEAD" and method == "GET":  # load balancers' health checks
                    await handler(scope, receive, _headers_only(send))
                    return
                raise MethodNotAllowed(
                    f"{scope['method']} is not allowed on {path}; use {method}", allow=method
                )
            await handler(scope, receive, send)
        except GatewayError as exc:
            if guard.started:  # a handler's error after its answer began: the last resort's
                raise
            allow = getattr(exc, "allow", None)
            # Anthropic's SDK reads its own error shape; everyone else gets OpenAI's
            shaped = ANTHROPIC.error_json(exc) if path.startswith("/v1/messages") else None
            await send_error(send, exc, [(b"allow", allow.encode())] if allow else None, shaped)

    async def _lifespan(self, receive, send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    log.error("start-up failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        self._metrics = metrics = GatewayMetrics(team_label=False)
        threads = self.settings.router_threads
        self._store = store = PolicyStore(
            self.settings.policy_path,
            self.settings.env,
            metrics,
            before_build=threads.prepare if threads is not None else None,
        )
        policy = store.runtime.policy
        metrics.team_label = policy.metrics.team_label
        cache = (
            build_cache(policy.cache, on_error=lambda: metrics.record_cache("error"))
            if policy.cache.enabled
            else None
        )
        state_url = policy.state_redis_url or policy.cache.redis_url
        state = build_state(
            state_url, on_error=metrics.record_state_error, namespace=policy.cache.namespace
        )
        self._cache, self._state = cache, state
        self._shadow = ShadowService(state, metrics.shadow)
        self.ledger = _build_ledger(policy.ledger, metrics)
        if policy.tracing.otlp_endpoint:
            from gateway.tracing import build_tracing

            self.tracing = build_tracing(policy.tracing)
        self._pipeline = Pipeline(
            store,
            metrics,
            cache,
            state,
            shadow=self._shadow,
            ledger=self.ledger,
            tracing=self.tracing,
        )
        self._protocols = ProtocolRoutes(
            self._pipeline, ResponsesCodec(state, policy.server.responses_ttl_s)
        )
        metrics.add_collector(FleetCollector(self._fleets))
        for fleet in self._fleets():
            fleet.start()  # member list and live load before the first request
        if self.settings.watch_interval_s > 0:
            store.start(self.settings.watch_interval_s)
        if self.settings.freeze_heap:
            _freeze_startup_heap()
        try:
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: store.reload_soon("SIGHUP")
            )
        except (
            NotImplementedError,
            RuntimeError,
            ValueError,
        ):  # not the main thread (tests) or no signals
            pass
        log.info("%s", availability(store.runtime.loaded))
        log.info(
            "gateway ready on %s (policy %s, models %s)",
            self.settings.env.get("GATEWAY_LISTEN", "its address"),
            self.settings.policy_path,
            ", ".join(policy.models),
        )

    def _fleets(self) -> list[FleetBackend]:
        rt = self.store.runtime
        return [b for b in rt.backends.values() if isinstance(b, FleetBackend)]

    async def shutdown(self) -> None:
        if self.ledger is not None:
            await self.ledger.close()
        if self.tracing is not None:
            await self.tracing.close()
        if self._shadow is not None:
            await self._shadow.close()
        if self._store is not None:
            await self._store.close()
        if self._cache is not None:
            await self._cache.close()
        if self._state is not None:
            await self._state.close()

    # ------------------------------------------------------------ handlers

    async def _chat(self, scope, receive, send) -> None:
        await self.pipeline.handle("chat", scope, receive, send)

    async def _completions(self, scope, receive, send) -> None:
        await self.pipeline.handle("completions", scope, receive, send)

    async def _embeddings(self, scope, receive, send) -> None:
        await self.pipeline.handle("embeddings", scope, receive, send)

    @property
    def protocols(self) -> ProtocolRoutes:
        if self._protocols is None:
            raise RuntimeError("the gateway has not started (ASGI lifespan startup)")
        return self._protocols

    async def _messages(self, scope, receive, send) -> None:
        await self.protocols.messages(scope, receive, send)

    async def _count_tokens(self, scope, receive, send) -> None:
        await self.protocols.count_tokens(scope, receive, send)

    async def _responses_create(self, scope, receive, send) -> None:
        await self.protocols.responses_create(scope, receive, send)

    def _authorize(self, scope) -> None:
        self.store.runtime.keys.authenticate(header_map(scope))

    async def _models(self, scope, receive, send) -> None:
        self._authorize(scope)
        policy = self.store.runtime.policy
        data = [_model_card(name, m.description) for name, m in policy.models.items()]
        await send_bytes(send, 200, orjson.dumps({"object": "list", "data": data}))

    async def _model(self, scope, send, name: str) -> None:
        self._authorize(scope)
        m = self.store.runtime.policy.models.get(name)
        if m is None:
            raise NotFoundError(f"model {name!r} does not exist", param="model")
        await send_bytes(send, 200, orjson.dumps(_model_card(name, m.description)))

    async def _health(self, scope, receive, send) -> None:
        await send_bytes(send, 200, b'{"status":"ok"}')

    async def _ready_handler(self, scope, receive, send) -> None:
        at, ok, up = self._ready
        if time.monotonic() - at > READY_CACHE_S:
            rt = self.store.runtime
            names = list(rt.backends)

            async def probe(name: str) -> bool:
                try:
                    async with asyncio.timeout(PROBE_TIMEOUT_S):
                        return await rt.backends[name].probe()
                except TimeoutError:
                    return False

            results = await asyncio.gather(*(probe(n) for n in names))
            up = [n for n, r in zip(names, results, strict=True) if r]
            ok = bool(up)
            self._ready = (time.monotonic(), ok, up)
        # no policy path here: /ready is open to anyone (load balancers), the path is internal
        body = orjson.dumps({"status": "ready" if ok else "not_ready", "backends_up": up})
        await send_bytes(send, 200 if ok else 503, body)

    async def _metrics_handler(self, scope, receive, send) -> None:
        body, ctype = self.metrics.render()
        await send_bytes(send, 200, body, content_type=ctype.encode())

    async def _admin_reload(self, scope, receive, send) -> None:
        headers = header_map(scope)
        if not self.store.runtime.keys.is_admin(headers):
            raise AuthenticationError("admin key required (policy auth.admin_key)")
        ok, message = await self.store.reload("admin endpoint")
        if not ok:
            raise InvalidRequestError(message, code="invalid_policy")
        await send_bytes(send, 200, orjson.dumps({"status": "reloaded"}))

    async def _admin_usage(self, scope, receive, send) -> None:
        """GET /admin/usage?since=YYYY-MM-DD[&until=...][&by=team,day][&team=...][&key=...]:
        the same JSON as ``gateway usage --format json``."""
        if not self.store.runtime.keys.is_admin(header_map(scope)):
            raise AuthenticationError("admin key required (policy auth.admin_key)")
        if self.ledger is None:
            raise NotFoundError(
                "no ledger configured (policy ledger.database_url)", code="no_ledger"
            )
        q = usage_query_from_params(parse_qs(scope.get("query_string", b"").decode("latin-1")))
        try:
            rows = await usage(await self.ledger.pool(), q)
        except DB_ERRORS as exc:
            log.warning("usage report: database unavailable: %s: %s", type(exc).__name__, exc)
            raise UpstreamUnavailableError("the ledger database is unavailable") from exc
        await send_bytes(send, 200, orjson.dumps(rows))


def usage_query_from_params(params: Mapping[str, list[str]]) -> UsageQuery:
    def one(name: str) -> str | None:
        got = params.get(name)
        return got[-1] if got else None

    since = one("since")
    if since is None:
        raise InvalidRequestError("since is required (YYYY-MM-DD)", param="since")
    try:
        until = one("until")
        by = one("by")
        return UsageQuery(
            since=parse_day(since),
            until=parse_day(until) if until else None,
            by=tuple(b for b in (by or "team").split(",") if b),
            team=one("team"),
            key=one("key"),
        )
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None


def _build_ledger(cfg: LedgerConfig, metrics: GatewayMetrics) -> LedgerWriter | None:
    if not cfg.database_url:
        return None
    writer = LedgerWriter(
        cfg.database_url,
        cfg.spool_dir,
        batch_size=cfg.batch_size,
        flush_interval_s=cfg.flush_interval_s,
        max_buffer_rows=cfg.max_buffer_rows,
        write_timeout_s=cfg.write_timeout_s,
        metrics=LedgerMetrics(metrics.registry),
    )
    writer.start()
    log.info("ledger: on (spool %s)", cfg.spool_dir)
    return writer


def _freeze_startup_heap() -> None:
    """Take what start-up built (imports, the policy, litellm's price map: ~200k objects) out
    of the cyclic GC's reach. Otherwise every full collection walks all of it: under load that
    was a pause of hundreds of ms every few seconds (the p99) and ~15% of the CPU. Objects
    stay refcounted; a reload's new runtime is collected normally."""
    gc.collect()
    gc.freeze()


def _model_card(name: str, description: str) -> dict:
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "gateway",
        "description": description,
    }


def create_app(
    policy_path: str | Path, env: Mapping[str, str] | None = None, watch_interval_s: float = 1.0
) -> GatewayApp:
    return GatewayApp(
        Settings(Path(policy_path), dict(os.environ) if env is None else env, watch_interval_s)
    )


class QueryStringRedactor(logging.Filter):
    """Drop query strings from uvicorn's access-log lines (``gateway serve --access-log``).

    The gateway reads keys from headers only, but a misconfigured client may still append
    ``?api_key=...``; the path is kept, the query replaced by ``?<redacted>``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn.access: (client, method, path with query, http version, status)
        if (
            isinstance(args, tuple)
            and len(args) == 5
            and isinstance(args[2], str)
            and "?" in args[2]
        ):
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?<redacted>", *args[3:])
        return True


def app_from_env() -> GatewayApp:
    """Factory for ``uvicorn --factory`` and for worker processes: policy from GATEWAY_POLICY."""
    path = os.environ.get("GATEWAY_POLICY")
    if not path:
        raise RuntimeError("GATEWAY_POLICY is not set")
    if not logging.getLogger().handlers:  # a spawned worker: the CLI's set-up is not inherited
        from gateway.cli import LOG_FORMAT

        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    access = logging.getLogger("uvicorn.access")  # each worker process builds its app here
    if not any(isinstance(f, QueryStringRedactor) for f in access.filters):
        access.addFilter(QueryStringRedactor())
    app = create_app(path, watch_interval_s=float(os.environ.get("GATEWAY_WATCH_INTERVAL", "1.0")))
    app.settings.freeze_heap = True  # this process is the gateway's own (CLI, uvicorn workers)
    app.settings.router_threads = RouterThreads.from_env(os.environ)  # set by `gateway serve`
    return app
