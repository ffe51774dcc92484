"""The gateway's HTTP connections: the shared guards plus limits handed to worker processes.

The protocol itself (a header deadline, a cap on open connections: what uvicorn lacks) is
``local_engine/http_guard.py``, shared with the engine server; that module imports nothing heavy
(no fastapi, no torch), so the gateway takes it from there. Here: the gateway's limits.

- ``header_timeout_s``: from a connection's first byte (or the start of the next request on a
  kept-alive one) to the end of the headers; past it a 408 and close;
- ``max_connections`` per process: past it a new connection gets a 503 and is closed at once;
  0 means half the descriptor limit (``default_max_connections``).

The body's read time and the bodies held in memory are bounded by the pipeline
(``server.body_timeout_s``, ``server.max_inflight_body_bytes``); in-flight requests get
``--graceful-shutdown-timeout`` on SIGTERM (uvicorn's ``timeout_graceful_shutdown``).

Worker processes re-import this module, so ``gateway serve`` hands the limits over in the
environment (``GATEWAY_HEADER_TIMEOUT``, ``GATEWAY_MAX_CONNECTIONS``), read once per process;
``protocol_class(limits)`` makes a configured class for an in-process server (tests).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from local_engine.http_guard import DEFAULT_HEADER_TIMEOUT_S, GuardedHttpProtocol, guarded_protocol

__all__ = [
    "ConnectionLimits",
    "GatewayHttpProtocol",
    "default_max_connections",
    "protocol_class",
]

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


class GatewayHttpProtocol(GuardedHttpProtocol):
    """The class ``gateway serve`` names to uvicorn: each worker process takes its limits from
    the environment ``gateway serve`` set, at its first connection."""

    _configured: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        if not cls._configured:
            limits = ConnectionLimits.from_env(os.environ)
            cls.header_timeout_s = limits.header_timeout_s
            cls.max_connections = limits.connection_cap
            cls._configured = True
        super().__init__(*args, **kwargs)


def protocol_class(limits: ConnectionLimits) -> type[GuardedHttpProtocol]:
    """A protocol class with these limits, for a server in this process (not for workers)."""
    return guarded_protocol(
        header_timeout_s=limits.header_timeout_s,
        max_connections=limits.connection_cap,
        name="GatewayHttpProtocol",
    )
