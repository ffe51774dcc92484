"""The gateway's HTTP connections: uvicorn's httptools protocol plus what uvicorn lacks.

uvicorn closes a connection that idles *between* requests (``timeout_keep_alive``) but gives a
new connection, or one sending its headers a byte at a time, all the time it wants, and accepts
connections without bound: a probe kept 2,000 idle sockets open for minutes, and with a lower
fd limit legitimate requests failed. ``GatewayHttpProtocol`` adds:

- a header deadline: from a connection's first byte (or the start of the next request on a
  kept-alive one) to the end of the headers, ``header_timeout_s``; past it a 408 and close;
  a new connection that sends nothing gets the same;
- a cap on open connections per process: past ``max_connections`` a new one gets a 503 and is
  closed at once (its descriptor freed).

The body's read time and the bodies held in memory are bounded by the pipeline
(``server.body_timeout_s``, ``server.max_inflight_body_bytes``); in-flight requests get
``--graceful-shutdown-timeout`` on SIGTERM (uvicorn's ``timeout_graceful_shutdown``).

Worker processes re-import this module, so ``gateway serve`` hands the limits over in the
environment (``GATEWAY_HEADER_TIMEOUT``, ``GATEWAY_MAX_CONNECTIONS``), read once per process;
``protocol_class(limits)`` makes a configured class for an in-process server (tests).
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = [
    "ConnectionLimits",
    "GatewayHttpProtocol",
    "default_max_connections",
    "protocol_class",
]

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_KEEP_ALIVE_S = 75  # behind a load balancer: longer than its idle timeout (60 s on AWS)
DEFAULT_GRACEFUL_SHUTDOWN_S = 30
MAX_CONNECTIONS_CEILING = 8192
HEADER_TIMEOUT_ENV = "GATEWAY_HEADER_TIMEOUT"
MAX_CONNECTIONS_ENV = "GATEWAY_MAX_CONNECTIONS"


def default_max_connections() -> int:
    """Half the process's descriptor limit (the rest: upstream pools, Redis, files), at most
    MAX_CONNECTIONS_CEILING."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS_CEILING
    return max(16, min(MAX_CONNECTIONS_CEILING, soft // 2))


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_connections: int = 0  # 0: default_max_connections()

    def __post_init__(self) -> None:
        if not self.header_timeout_s > 0:
            raise ValueError("header_timeout_s must be positive")
        if self.max_connections < 0:
            raise ValueError("max_connections must be >= 0")

    @property
    def connection_cap(self) -> int:
        return self.max_connections or default_max_connections()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ConnectionLimits:
        return cls(
            header_timeout_s=float(env.get(HEADER_TIMEOUT_ENV, DEFAULT_HEADER_TIMEOUT_S)),
            max_connections=int(env.get(MAX_CONNECTIONS_ENV, 0)),
        )

    def to_env(self) -> dict[str, str]:
        return {
            HEADER_TIMEOUT_ENV: str(self.header_timeout_s),
            MAX_CONNECTIONS_ENV: str(self.max_connections),
        }


def _reply(status: str, code: str, message: str) -> bytes:
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


class GatewayHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits | None] = None  # None: from the environment, once
    _cap: ClassVar[int] = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cls = type(self)
        if cls.limits is None:
            cls.limits = ConnectionLimits.from_env(os.environ)
        if not cls._cap:
            cls._cap = cls.limits.connection_cap
        self._header_timeout_s = cls.limits.header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._cap:
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
                self._header_timeout_s, self._on_header_timeout
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


def protocol_class(limits: ConnectionLimits) -> type[GatewayHttpProtocol]:
    """A protocol class with these limits, for a server in this process (not for workers)."""
    return type(
        "GatewayHttpProtocol",
        (GatewayHttpProtocol,),
        {"limits": limits, "_cap": limits.connection_cap},
    )
