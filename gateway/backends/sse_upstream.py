"""An upstream's server-sent events read off an aiohttp response: what every such stream shares.

``SSEUpstreamStream`` primes (reads the first event before the stream is handed over, so a
failure there raises from ``open_stream`` and the pipeline can still fall back), reads events
(chunks fed to an ``SSEReader``; read timeouts and connection faults mapped to
``UpstreamError``, scrubbed of the key) and closes (the connection goes back to the pool only
after a stream read to its end). A subclass says what each event is to it (``_event``: checked,
its usage noted, an error event raised; None ends the stream) and what it yields
(``__aiter__``):

    SSEUpstreamStream
    ├── SSEStream      (openai_compat) OpenAI chat/text completion chunks, ended by [DONE]
    └── NativeStream   (native) Anthropic Messages / OpenAI Responses events, relayed as sent
"""

from __future__ import annotations

from abc import abstractmethod

import aiohttp

from gateway.backends.base import UpstreamStream
from gateway.backends.upstream_errors import connection_error, timeout_error
from gateway.errors import UpstreamError
from gateway.sse import SSEReader

__all__ = ["SSEUpstreamStream"]


class SSEUpstreamStream(UpstreamStream):
    """An open SSE answer of backend ``name`` (``secret``: its key, never in a message)."""

    def __init__(
        self,
        name: str,
        secret: str | None,
        model: str,
        resp: aiohttp.ClientResponse,
        reader: SSEReader,
    ) -> None:
        self.model = model
        self.usage = None
        self._name = name
        self._secret = secret
        self._resp = resp
        self._reader = reader
        self._first: bytes | None = None  # read by prime(), yielded first
        self._done = False  # read to its end: the connection may go back to the pool

    @abstractmethod
    def _event(self, event: bytes) -> bytes | None:
        """One event as read: what to hand on (after checking it and noting what it carries;
        raises ``UpstreamError`` for an error event), or None where it ends the stream."""

    async def prime(self) -> None:
        """Wait for the first event; the response is closed if none comes."""
        try:
            self._first = await self._next_event()
        except BaseException:
            self._resp.close()
            raise
        if self._first is None:
            self._resp.close()
            raise UpstreamError(f"backend {self._name!r} closed the stream before the first event")
        self._primed()

    def _primed(self) -> None:
        """After the first event came (what a subclass reads of it before any is yielded)."""

    async def _next_event(self) -> bytes | None:
        """The next event (through ``_event``), or None at the end of the body."""
        reader = self._reader
        while True:
            event = reader.next()
            if event is not None:
                return self._event(event)
            try:
                chunk = await self._resp.content.readany()
            except TimeoutError as exc:
                raise timeout_error(self._name, exc, "while streaming") from exc
            except aiohttp.ClientError as exc:
                raise connection_error(self._name, exc, self._secret, "while streaming") from exc
            if not chunk:
                return None
            reader.feed(chunk)

    def _cut_short(self, what: str) -> UpstreamError:
        """The body ended before the stream did (``what``: what was missing)."""
        return UpstreamError(f"backend {self._name!r} ended the stream {what}")

    async def aclose(self) -> None:
        if self._done:
            self._resp.release()
        else:
            self._resp.close()  # unread data: the connection cannot go back to the pool
