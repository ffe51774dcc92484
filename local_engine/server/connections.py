"""The engine's HTTP server: uvicorn's httptools protocol plus what uvicorn lacks.

uvicorn closes a connection that idles *between* requests (``timeout_keep_alive``) but gives a
new connection, or one sending its headers a byte at a time, all the time it wants, and it
accepts connections without bound. ``GuardedHttpToolsProtocol`` adds:

- a header deadline: from the connection's first byte (or the start of a request on a kept-alive
  connection) to the end of the headers, ``header_timeout_s``; past it, a 408 and close;
- a connection cap: past ``max_connections`` open connections a new one gets a 503 and is closed.

Body read time is bounded by ``server/body.py``; in-flight requests get ``graceful_shutdown_s`` on
SIGTERM (uvicorn's ``timeout_graceful_shutdown``), then they are cancelled.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from local_engine.server.limits import ServerLimits

__all__ = ["GuardedHttpToolsProtocol", "uvicorn_config"]


def _reply(status: str, code: str, message: str) -> bytes:
    body = b'{"error":{"message":"%s","type":"invalid_request_error","param":null,"code":"%s"}}' % (
        message.encode(),
        code.encode(),
    )
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


_HEADER_TIMEOUT = _reply(
    "408 Request Timeout", "request_timeout", "the request headers took too long"
)
_BUSY = _reply("503 Service Unavailable", "too_many_connections", "too many open connections")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits = ServerLimits()  # replaced per server by ``uvicorn_config``

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            transport.write(_BUSY)
            transport.close()
            return
        self._arm_header_timer()

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
                self.limits.header_timeout_s, self._on_header_timeout
            )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(_HEADER_TIMEOUT)
            self.transport.close()


def uvicorn_config(
    app: Any, host: str, port: int, limits: ServerLimits, **kw: Any
) -> uvicorn.Config:
    """uvicorn settings for the engine server under ``limits`` (the CLI and the tests use it)."""
    protocol = type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        timeout_keep_alive=limits.keep_alive_s,
        timeout_graceful_shutdown=limits.graceful_shutdown_s,
        **kw,
    )
