"""Native pass-through: a caller's own body to a backend that speaks the caller's protocol.

    protocol    sent to                          auth         usage read from
    anthropic   <api_base>/v1/messages           x-api-key    ``usage`` (whole); message_start
                                                              + message_delta events (stream)
    responses   <base_url>/responses             Bearer       ``usage`` (whole); the
                                                              response.completed event (stream)

The body goes up with only ``model`` replaced by the backend's upstream model (the pipeline
hands over what the caller's codec says to send: see ``Codec.native_body``); the answer comes
back as the upstream sent it: a whole body byte for byte, a stream event by event (normalised
line ends, comments dropped). Nothing is decoded but what usage and failures need, so thinking
blocks, ``cache_control`` markers and reasoning items survive.

Failures map as for every adapter (``upstream_errors``): an HTTP error before the first byte
raises ``UpstreamError`` (the pipeline retries, falls back, or answers in the caller's error
shape); an ``error`` event (or ``response.failed``) raises mid-stream, scrubbed of the key.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from gateway.backends.base import UpstreamRequest, UpstreamResponse, Usage
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
from gateway.sse import DONE, SSEReader, data_of, json_of, name_of

__all__ = ["ANTHROPIC_VERSION", "DIALECTS", "Dialect", "NativeEndpoint", "NativeStream"]

ANTHROPIC_VERSION = "2023-06-01"  # sent when the caller gave none
MAX_TOKEN_COUNT = 10**9


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= MAX_TOKEN_COUNT:
        return 0
    return int(v)


def _anthropic_usage(u: Any) -> Usage | None:
    """Anthropic counts cached prompt tokens apart: the prompt side is all three."""
    if not isinstance(u, dict):
        return None
    read = _count(u.get("cache_read_input_tokens"))
    write = _count(u.get("cache_creation_input_tokens"))
    prompt = _count(u.get("input_tokens")) + write + read
    return Usage(prompt, _count(u.get("output_tokens")), read, write)


def _responses_usage(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    details = u.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return Usage(_count(u.get("input_tokens")), _count(u.get("output_tokens")), _count(cached))


@dataclass(frozen=True, slots=True)
class Dialect:
    """What the adapter needs to know of one protocol: where usage is, how a stream ends."""

    protocol: str
    usage: Callable[[Any], Usage | None]  # from a ``usage`` object
    usage_events: frozenset[bytes]  # stream events that may carry usage (parsed)
    last_events: frozenset[bytes]  # a stream is complete after one of these
    error_events: frozenset[bytes]  # the upstream failed mid-stream
    count_path: str | None = None  # the upstream's own prompt-token count, after the endpoint URL


ANTHROPIC = Dialect(
    "anthropic",
    _anthropic_usage,
    frozenset({b"message_start", b"message_delta"}),
    frozenset({b"message_stop"}),
    frozenset({b"error"}),
    "/count_tokens",  # POST /v1/messages/count_tokens -> {"input_tokens": n}
)
RESPONSES = Dialect(
    "responses",
    _responses_usage,
    frozenset({b"response.completed", b"response.incomplete"}),
    frozenset({b"response.completed", b"response.incomplete"}),
    frozenset({b"error", b"response.failed"}),
)
DIALECTS = {"anthropic": ANTHROPIC, "responses": RESPONSES}


class NativeEndpoint:
    """One backend's endpoint for one caller protocol; a pooled aiohttp session of its own
    unless the adapter lends one (``client``)."""

    def __init__(
        self,
        name: str,
        dialect: Dialect,
        url: str,
        model: str,
        headers: dict[str, str],
        cfg: BackendConfig,
        secret: str | None,
        client: Callable[[], aiohttp.ClientSession] | None = None,
    ) -> None:
        self.name = name
        self.dialect = dialect
        self.url = url
        self.model = model  # what the upstream calls it (e.g. without litellm's provider prefix)
        self._headers = {"Content-Type": "application/json", **headers}
        self._cfg = cfg
        self._timeouts = UpstreamTimeouts(cfg)
        self._secret = secret
        self._lent = client
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._lent is not None:
            return self._lent()
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=self._cfg.max_connections, ttl_dns_cache=300)
            # no cookie jar: nothing one answer sets may ride along on other callers' requests
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar()
            )
            self._loop = loop
        return self._session

    async def _post(
        self, request: UpstreamRequest, stream: bool, path: str = ""
    ) -> aiohttp.ClientResponse:
        return await post_checked(
            self._client(),
            self.url + path,
            data=request.payload_for(self.model),
            headers={**self._headers, **request.headers},
            timeout=self._timeouts.get(request.timeout_s, stream),
            name=self.name,
            secret=self._secret,
        )

    async def count_tokens(self, request: UpstreamRequest) -> bytes:
        """The upstream's own count of this request's prompt tokens, its JSON as it came
        (``{"input_tokens": n}``); raises ``UpstreamError`` on a failure or an odd answer."""
        path = self.dialect.count_path
        if path is None:
            raise UpstreamError(f"backend {self.name!r} has no token count for {request.protocol}")
        body, _ = await self._read(await self._post(request, stream=False, path=path))
        doc = _object(self.name, body, 200)
        n = doc.get("input_tokens")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise UpstreamError(
                f"backend {self.name!r} answered a token count without input_tokens"
            )
        return body

    async def _read(self, resp: aiohttp.ClientResponse) -> tuple[bytes, int]:
        try:
            return await resp.read(), resp.status
        except TimeoutError as exc:
            raise timeout_error(self.name, exc) from exc
        except aiohttp.ClientError as exc:
            raise connection_error(self.name, exc, self._secret) from exc
        finally:
            resp.release()

    async def complete(self, request: UpstreamRequest) -> UpstreamResponse:
        body, status = await self._read(await self._post(request, stream=False))
        doc = _object(self.name, body, status)
        model = doc.get("model")
        return UpstreamResponse(
            body=body,
            model=model if isinstance(model, str) else self.model,
            usage=self.dialect.usage(doc.get("usage")),
            status=status,
            protocol=request.protocol,
        )

    async def open_stream(self, request: UpstreamRequest) -> NativeStream:
        stream = NativeStream(self, await self._post(request, stream=True), request.protocol)
        await stream.prime()  # a failure before the first event raises here: fallback is open
        return stream

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


def _object(name: str, body: bytes, status: int) -> dict[str, Any]:
    """An upstream's JSON answer, which must be an object."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(
            f"backend {name!r} answered with invalid JSON", upstream_status=status
        ) from exc
    if not isinstance(doc, dict):
        raise UpstreamError(
            f"backend {name!r} answered with a JSON {type(doc).__name__}, not an object",
            upstream_status=status,
        )
    return doc


class NativeStream(SSEUpstreamStream):
    """The upstream's own events, relayed as they come: what one read brought goes out as one
    piece (``relayed`` counts the events); usage (and, for Responses, the final ``response``)
    noted on the way. Ends after the protocol's last event."""

    def __init__(self, ep: NativeEndpoint, resp: aiohttp.ClientResponse, protocol: Any) -> None:
        super().__init__(ep.name, ep._secret, ep.model, resp, SSEReader(keep_names=True))
        self.protocol = protocol
        self.answer = None
        self._dialect = ep.dialect
        self._usage: dict[str, Any] = {}  # merged as events bring it (Anthropic sends it in two)
        self._failed: UpstreamError | None = None  # raised after the events before it are out

    def _event(self, event: bytes) -> bytes | None:
        """Usage, model and failures from the few events that carry them; others pass unread.
        An OpenAI-style ``[DONE]`` is never relayed: the stream is over, complete only if its
        last event came."""
        if event == DONE:
            return None
        d = self._dialect
        name = name_of(event)
        obj = None
        if name is None:  # data-only: the type is in the payload
            obj = json_of(event)
            if not isinstance(obj, dict):
                raise malformed_event(self._name, event, self._secret)
            name = str(obj.get("type", "")).encode()
        if name in d.error_events:
            raise stream_error(self._name, data_of(event), self._secret)
        if name in d.usage_events:
            obj = obj if obj is not None else json_of(event)
            if not isinstance(obj, dict):
                raise malformed_event(self._name, event, self._secret)
            self._note(name, obj)
        if name in d.last_events:
            self._done = True
        return event

    def _note(self, name: bytes, obj: dict[str, Any]) -> None:
        inner = obj.get("message") if name == b"message_start" else obj.get("response")
        holder = inner if isinstance(inner, dict) else obj
        if isinstance(holder.get("model"), str):
            self.model = holder["model"]
        u = holder.get("usage")
        if isinstance(u, dict):
            self._usage.update({k: v for k, v in u.items() if v is not None})
            self.usage = self._dialect.usage(self._usage)
        if name in self._dialect.last_events and inner is not None:
            self.answer = inner  # the Responses API's final ``response`` object

    def _buffered(self) -> bytes | None:
        """The next event already read, if any (never waits)."""
        event = self._reader.next()
        return None if event is None else self._event(event)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        first, self._first = self._first, None
        if first is not None:
            self.relayed += 1
            yield first
        while not self._done:
            if self._failed is not None:
                raise self._failed
            event = await self._next_event()
            if event is None:
                raise self._cut_short("before its last event")
            batch = [event]
            while not self._done:  # what the same read brought: one write to the caller
                try:
                    more = self._buffered()
                except UpstreamError as exc:
                    self._failed = exc
                    break
                if more is None:
                    break
                batch.append(more)
            self.relayed += len(batch)
            yield event if len(batch) == 1 else b"".join(batch)


ANTHROPIC_API = "https://api.anthropic.com"


def endpoints_for(
    name: str,
    cfg: BackendConfig,
    secret: str | None,
    client: Callable[[], aiohttp.ClientSession] | None = None,
) -> dict[str, NativeEndpoint]:
    """The native endpoints of one backend, by caller protocol (``cfg.natives``)."""
    out: dict[str, NativeEndpoint] = {}
    if "responses" in cfg.natives and cfg.base_url:
        # an OpenAI-compatible server: the adapter's session (its Bearer key and headers)
        url = cfg.base_url.rstrip("/") + "/responses"
        out["responses"] = NativeEndpoint(name, RESPONSES, url, cfg.model, {}, cfg, secret, client)
    if "anthropic" in cfg.natives:
        base = (cfg.base_url or ANTHROPIC_API).rstrip("/")
        url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        headers = {"anthropic-version": ANTHROPIC_VERSION, **cfg.headers}
        if secret:
            headers["x-api-key"] = secret
        model = cfg.model.split("/", 1)[1]  # litellm's provider prefix off: anthropic/claude-...
        out["anthropic"] = NativeEndpoint(name, ANTHROPIC, url, model, headers, cfg, secret, client)
    return out
