"""Redis clients that fail fast, and a guard that stops connect storms while Redis is down.

Both the answer cache and the shared state use Redis on the request path, where a slow or
dead Redis must cost almost nothing: commands time out in 500 ms, redis-py's own retries are
off, a bounded pool stops a burst of requests from opening a burst of connections, and after
a few consecutive connection failures the guard makes callers skip Redis until a backoff
passes; then exactly one call probes it, and success closes the gap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["REDIS_ERRORS", "RedisGuard", "make_client"]

log = logging.getLogger("gateway.redis")

DEFAULT_TIMEOUT_S = (
    0.5  # per command, and for a free pooled connection (0.1 s failed on a stalling VM)
)
DEFAULT_CONNECT_TIMEOUT_S = 1.0  # a new connection's handshake, once per pooled connection
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_FAILURE_THRESHOLD = 3  # consecutive connection failures that mark Redis down
DEFAULT_BACKOFF_S = 0.5
DEFAULT_MAX_BACKOFF_S = 15.0
PROBE_EXPIRY_S = 5.0  # far longer than any probe's timeouts (connect 1 s + command 0.5 s)

# What a Redis call can raise that the request path must survive.
REDIS_ERRORS = (RedisError, OSError, TimeoutError)
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


def make_client(
    url: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> aioredis.Redis:
    """A client over a bounded pool, with short timeouts and no hidden retries. Connects lazily."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=connect_timeout_s,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
        lib_name=None,  # skips CLIENT SETINFO: one round trip less per new connection
        lib_version=None,
    )
    return aioredis.Redis.from_pool(pool)


class RedisGuard:
    """Up/down bookkeeping for one Redis. ``on_error`` is called once per failed or skipped call."""

    def __init__(
        self,
        what: str,
        on_error: Callable[[], None] | None = None,
        backoff_s: float = DEFAULT_BACKOFF_S,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what  # for log lines, e.g. "response cache"
        self.on_error = on_error or (lambda: None)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.failure_threshold = failure_threshold
        self._clock = clock
        self._failures = 0  # consecutive connection failures
        self._down = False
        self._probing = False
        self._probe_started = 0.0
        self._retry_at = 0.0
        self._next_backoff = backoff_s

    @property
    def up(self) -> bool:
        return not self._down

    def should_try(self) -> bool:
        """True if the caller may talk to Redis now; False means skip it (and call ``skipped``)."""
        if not self._down:
            return True
        now = self._clock()
        # A probe that never reported back (its call was cancelled: timeout, shutdown) stops
        # counting after PROBE_EXPIRY_S, or Redis would never be tried again.
        if (self._probing and now - self._probe_started < PROBE_EXPIRY_S) or now < self._retry_at:
            return False
        self._probing = True
        self._probe_started = now
        return True

    def skipped(self) -> None:
        self.on_error()

    def ok(self) -> None:
        self._failures = 0
        if self._down:
            log.warning("%s: Redis is reachable again", self.what)
            self._down = False
        self._probing = False
        self._next_backoff = self.backoff_s

    def failed(self, exc: BaseException) -> None:
        self.on_error()
        self._probing = False
        if not isinstance(exc, _UNREACHABLE):  # Redis answered with an error: it is up
            log.warning("%s: Redis error %s: %s", self.what, type(exc).__name__, exc)
            return
        self._failures += 1
        if not self._down and self._failures < self.failure_threshold:
            return
        if not self._down:
            log.warning(
                "%s: Redis unreachable (%s: %s); bypassing it and retrying in the background",
                self.what,
                type(exc).__name__,
                exc,
            )
        self._down = True
        self._retry_at = self._clock() + self._next_backoff
        self._next_backoff = min(self._next_backoff * 2, self.max_backoff_s)
