"""The fast path: upstreams that speak OpenAI's API (OpenAI, local_engine, vLLM, SGLang, Ollama).

The client's bytes go upstream unchanged when ``model`` already names the backend's model,
else with only ``model`` replaced; the upstream's bytes come back unchanged (parsed only to
read ``usage`` and ``model``). One pooled keep-alive aiohttp session per backend, created
lazily in the running loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from gateway.backends.base import Backend, UpstreamRequest, UpstreamResponse, UpstreamStream, Usage
from gateway.backends.native import endpoints_for
from gateway.backends.pricing import resolve_capabilities
from gateway.backends.sse_upstream import SSEUpstreamStream
from gateway.backends.timeouts import UpstreamTimeouts
from gateway.backends.upstream_errors import (
    connection_error,
    malformed_event,
    post_checked,
    stream_error,
    timeout_error,
)
from gateway.config.schema import BackendConfig
from gateway.errors import UpstreamError
from gateway.sse import (
    DONE,
    SSEReader,
    data_of,
    is_error_event,
    json_object_of,
)

log = logging.getLogger("gateway.backends.openai")

__all__ = ["OpenAICompatBackend", "SSEStream", "usage_from"]

PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}
KEEPALIVE_S = 30.0
PROBE_TIMEOUT_S = 2.0


MAX_TOKEN_COUNT = 10**9  # beyond any context window: a count past it is garbage


def _count(v: Any) -> int:
    """A token count from an upstream's JSON: a non-negative int, else 0 ("many", -3, 1e400,
    true and null are an upstream's bug, not a reason to fail the client's request)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= MAX_TOKEN_COUNT:
        return 0
    return int(v)


def usage_from(obj: dict[str, Any]) -> Usage | None:
    u = obj.get("usage")
    if not isinstance(u, dict):
        return None
    details = u.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return Usage(_count(u.get("prompt_tokens")), _count(u.get("completion_tokens")), _count(cached))


class OpenAICompatBackend(Backend):
    kind = "openai_compatible"

    def __init__(self, name: str, cfg: BackendConfig) -> None:
        if not cfg.base_url:
            raise ValueError(f"backend {name!r}: base_url is required for kind openai_compatible")
        self.name = name
        self.cfg = cfg
        self.model = cfg.model
        self.self_hosted = cfg.self_hosted
        self._base = cfg.base_url.rstrip("/")
        self._urls = {op: self._base + path for op, path in PATHS.items()}
        origin = urlsplit(self._base)
        self._health_url = f"{origin.scheme}://{origin.netloc}/health"
        self._secret = cfg.api_key.get_secret_value() if cfg.api_key is not None else None
        headers = {"Content-Type": "application/json", **cfg.headers}
        if self._secret:
            headers["Authorization"] = f"Bearer {self._secret}"
        self._headers = headers
        self._timeouts = UpstreamTimeouts(cfg)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # e.g. vLLM or OpenAI itself taking Responses callers' bodies as sent (same session)
        self._natives = endpoints_for(name, cfg, self._secret, self._client)
        self.native = frozenset(self._natives)
        self.native_reasoning = resolve_capabilities(cfg).reasoning is not False

    # ------------------------------------------------------------ plumbing

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(
                limit=self.cfg.max_connections, keepalive_timeout=KEEPALIVE_S, ttl_dns_cache=300
            )
            # No cookie jar: a cookie one upstream answer sets must never ride along on other
            # clients' requests through the shared session.
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, cookie_jar=aiohttp.DummyCookieJar()
            )
            self._loop = loop
        return self._session

    async def _post(self, request: UpstreamRequest, stream: bool) -> aiohttp.ClientResponse:
        """Send the request; returns a response with status < 400 or raises UpstreamError."""
        return await post_checked(
            self._client(),
            self._urls[request.operation],
            data=request.payload_for(self.model),
            headers=request.headers or None,
            timeout=self._timeouts.get(request.timeout_s, stream),
            name=self.name,
            secret=self._secret,
        )

    # ------------------------------------------------------------ the contract

    async def count_tokens(self, request: UpstreamRequest) -> bytes:
        ep = self._natives.get(request.protocol)
        if ep is None:
            return await super().count_tokens(request)
        return await ep.count_tokens(request)

    async def complete(self, request: UpstreamRequest) -> UpstreamResponse:
        if request.protocol != "openai":
            return await self._natives[request.protocol].complete(request)
        resp = await self._post(request, stream=False)
        try:
            body = await resp.read()
        except TimeoutError as exc:
            raise timeout_error(self.name, exc) from exc
        except aiohttp.ClientError as exc:
            raise connection_error(self.name, exc, self._secret) from exc
        finally:
            resp.release()
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                f"backend {self.name!r} answered with invalid JSON", upstream_status=resp.status
            ) from exc
        if not isinstance(parsed, dict):
            raise UpstreamError(
                f"backend {self.name!r} answered with a JSON {type(parsed).__name__}, not an object",
                upstream_status=resp.status,
            )
        return UpstreamResponse(
            body=body,
            model=parsed.get("model") or self.model,
            usage=usage_from(parsed),
            status=resp.status,
            doc=parsed,
        )

    async def open_stream(self, request: UpstreamRequest) -> UpstreamStream:
        if request.protocol != "openai":
            return await self._natives[request.protocol].open_stream(request)
        resp = await self._post(request, stream=True)
        stream = SSEStream(self, resp)
        await stream.prime()  # a failure before the first event raises here: fallback is open
        return stream

    async def probe(self) -> bool:
        """Self-hosted servers (our engine, vLLM, SGLang) answer ``GET /health`` at their root
        with their real state: an engine whose step loop died still lists its models but says
        503 there. Where there is no such endpoint (404/405: Ollama, hosted APIs), the model
        list is the check."""
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
        try:
            if self.self_hosted:
                async with self._client().get(self._health_url, timeout=timeout) as resp:
                    if resp.status not in (404, 405):
                        return 200 <= resp.status < 300
            async with self._client().get(self._base + "/models", timeout=timeout) as resp:
                return 200 <= resp.status < 300
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


class SSEStream(SSEUpstreamStream):
    """Server-sent events from an OpenAI-compatible upstream, relayed event by event. Each
    event is parsed once (to validate it); ``last_json`` hands that parse on."""

    def __init__(self, backend: OpenAICompatBackend, resp: aiohttp.ClientResponse) -> None:
        super().__init__(backend.name, backend._secret, backend.model, resp, SSEReader())
        self.last_json = None
        self._first_json: dict[str, Any] | None = None
        self._json: dict[str, Any] | None = None  # the data of what _next_event returned

    def _primed(self) -> None:
        obj = self._first_json = self._json
        if obj is not None and isinstance(obj.get("model"), str):
            self.model = obj["model"]

    def _event(self, event: bytes) -> bytes:
        """A ``data: ...`` event (with its blank line), its data (None for ``[DONE]``) in
        ``_json``."""
        if is_error_event(event):
            raise stream_error(self._name, data_of(event), self._secret)
        if event == DONE:
            self._json = None
            return event
        obj = json_object_of(event)
        if obj is None:
            raise malformed_event(self._name, event, self._secret)
        self._json = obj
        return event

    def _note_usage(self, obj: dict[str, Any]) -> None:
        usage = usage_from(obj)
        if usage is not None:
            self.usage = usage

    async def __aiter__(self) -> AsyncIterator[bytes]:
        first, self._first = self._first, None
        if first is not None:
            obj = self.last_json = self._first_json
            if obj is not None:
                self._note_usage(obj)
            yield first
        while True:
            event = await self._next_event()
            if event is None:
                raise self._cut_short("without [DONE]")
            obj = self.last_json = self._json
            if obj is None:  # [DONE], the one event without data
                self._done = True
                yield event
                return
            if obj.get("usage") is not None:  # most chunks carry none
                self._note_usage(obj)
            yield event
