"""The engine's uvicorn settings: the shared connection guards (``local_engine/http_guard.py``:
header deadline, connection cap) under this server's ``ServerLimits``.

Body read time is bounded by ``server/body.py``; in-flight requests get ``graceful_shutdown_s`` on
SIGTERM (uvicorn's ``timeout_graceful_shutdown``), then they are cancelled.
"""

from __future__ import annotations

from typing import Any

import uvicorn

from local_engine.http_guard import guarded_protocol
from local_engine.server.limits import ServerLimits

__all__ = ["uvicorn_config"]


def uvicorn_config(
    app: Any, host: str, port: int, limits: ServerLimits, **kw: Any
) -> uvicorn.Config:
    """uvicorn settings for the engine server under ``limits`` (the CLI and the tests use it)."""
    protocol = guarded_protocol(
        header_timeout_s=limits.header_timeout_s,
        max_connections=limits.max_connections,
        name="EngineHttpProtocol",
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        timeout_keep_alive=limits.keep_alive_s,
        timeout_graceful_shutdown=limits.graceful_shutdown_s,
        **kw,
    )
