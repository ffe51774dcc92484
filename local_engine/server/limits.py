"""What one engine server lets a client hold: body size, read times, connections.

Defaults suit a gateway in front of the engine; ``local-engine serve`` exposes each as a flag.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from local_engine.http_guard import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_CONNECTIONS

__all__ = ["ServerLimits"]

DEFAULT_MAX_BODY_BYTES = 8 * 1024**2  # a 128k-token prompt is ~0.5 MB of text
DEFAULT_BODY_TIMEOUT_S = 30.0  # the whole body, from the end of the headers
DEFAULT_KEEP_ALIVE_S = 5  # idle time between requests on one connection
DEFAULT_GRACEFUL_SHUTDOWN_S = 30  # on SIGTERM, in-flight requests get this long to finish
DEFAULT_TOKENIZER_THREADS = 2  # chat templates and tokenization run off the event loop


class ServerLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024)
    body_timeout_s: float = Field(DEFAULT_BODY_TIMEOUT_S, gt=0)
    header_timeout_s: float = Field(DEFAULT_HEADER_TIMEOUT_S, gt=0)
    keep_alive_s: int = Field(DEFAULT_KEEP_ALIVE_S, ge=1)
    max_connections: int = Field(DEFAULT_MAX_CONNECTIONS, ge=1)
    graceful_shutdown_s: int = Field(DEFAULT_GRACEFUL_SHUTDOWN_S, ge=1)
    tokenizer_threads: int = Field(DEFAULT_TOKENIZER_THREADS, ge=1)
