"""Connection guards for both HTTP servers: uvicorn's httptools protocol plus what uvicorn lacks.

uvicorn closes a connection that idles *between* requests (``timeout_keep_alive``) but gives a
new connection, or one sending its headers a byte at a time, all the time it wants, and it
accepts connections without bound: a probe kept 2,000 idle sockets open for minutes, and with a
lower fd limit legitimate requests failed. ``GuardedHttpProtocol`` adds:

- a header deadline: from a connection's first byte (or the start of the next request on a
  kept-alive one) to the end of the headers, ``header_timeout_s``; past it a 408 and close;
  a new connection that sends nothing gets the same;
- a connection cap: past ``max_connections`` open connections a new one gets a 503 and is
  closed at once (its descriptor freed).

Both the engine (``local_engine/server/connections.py``) and the gateway
(``gateway/server/connections.py``) serve with it; each sets the limits its own way.

Why here: the gateway already runs the engine (``gateway serve --local-engine``) and may import
from ``local_engine``; the engine never imports the gateway. This module sits at the top of
``local_engine``, not in ``local_engine.server`` (whose package imports fastapi) nor near the
model code (torch), and imports only uvicorn and the standard library, so the gateway pulls in
nothing heavy; tests/local_engine/test_http_guard.py checks that.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = [
    "BUSY_REPLY",
    "DEFAULT_HEADER_TIMEOUT_S",
    "DEFAULT_MAX_CONNECTIONS",
    "HEADER_TIMEOUT_REPLY",
    "GuardedHttpProtocol",
    "guarded_protocol",
]

DEFAULT_HEADER_TIMEOUT_S = 10.0  # a connection's request line and headers
DEFAULT_MAX_CONNECTIONS = 1024


def _reply(status: str, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 response with an OpenAI-format error body, closing the connection."""
    body = b'{"error":{"message":"%s","type":"invalid_request_error","param":null,"code":"%s"}}' % (
        message.encode(),
        code.encode(),
    )
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


HEADER_TIMEOUT_REPLY = _reply(
    "408 Request Timeout", "request_timeout", "the request headers took too long"
)
BUSY_REPLY = _reply("503 Service Unavailable", "too_many_connections", "too many open connections")


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and a connection cap (class-level:
    uvicorn builds one protocol object per connection from the class it is given)."""

    header_timeout_s: ClassVar[float] = DEFAULT_HEADER_TIMEOUT_S
    max_connections: ClassVar[int] = DEFAULT_MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(BUSY_REPLY)
            transport.close()
            return
        self._arm_header_timer()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()  # a kept-alive connection starts its next request

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.header_timeout_s, self._on_header_timeout
            )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(HEADER_TIMEOUT_REPLY)
            self.transport.close()


def guarded_protocol(
    *, header_timeout_s: float, max_connections: int, name: str = "GuardedHttpProtocol"
) -> type[GuardedHttpProtocol]:
    """A protocol class under these limits, to hand to ``uvicorn.Config(http=...)``."""
    if not header_timeout_s > 0:
        raise ValueError("header_timeout_s must be positive")
    if max_connections < 1:
        raise ValueError("max_connections must be >= 1")
    return type(
        name,
        (GuardedHttpProtocol,),
        {"header_timeout_s": header_timeout_s, "max_connections": max_connections},
    )
