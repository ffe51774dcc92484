"""Retries with backoff and a circuit breaker per backend: plain Python, clock injected.

    closed --N consecutive failures--> open --cooldown--> half_open (one probe let through)
    half_open --probe succeeds--> closed
    half_open --probe fails-----> open (cooldown starts again)

Nothing here does I/O except ``call_with_retries`` awaiting the call and its sleeps, both
injectable, so every transition is unit-tested with a fake clock in microseconds.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from gateway.config.schema import CircuitBreakerConfig, RetryConfig
from gateway.errors import UpstreamError

__all__ = [
    "CircuitBreaker",
    "CircuitState",
    "backoff_delay",
    "call_with_retries",
    "counts_as_failure",
]

CircuitState = Literal["closed", "open", "half_open"]
STATE_VALUE: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}  # for a Prometheus gauge
# Upstream statuses that say "your request is wrong", not "I am unwell": they do not trip the breaker.
CLIENT_FAULT_STATUSES = frozenset({400, 413, 422})

T = TypeVar("T")


def counts_as_failure(exc: UpstreamError) -> bool:
    """Whether an error says something about the backend's health (the breaker counts it)."""
    return exc.counts_against_backend and exc.upstream_status not in CLIENT_FAULT_STATUSES


class CircuitBreaker:
    """Per-backend breaker. ``allow()`` before a call, then ``record_success``/``record_failure``.

    In half-open state exactly one probe is let through; should its caller never report back
    (cancelled), another probe is allowed after a further cooldown, so the breaker cannot
    stay stuck half-open.
    """

    __slots__ = ("cfg", "_clock", "_open", "_opened_at", "_failures", "_probe_at")

    def __init__(
        self, cfg: CircuitBreakerConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cfg = cfg
        self._clock = clock
        self._open = False
        self._opened_at = 0.0
        self._failures = 0
        self._probe_at: float | None = None  # when the half-open probe was let through

    @property
    def state(self) -> CircuitState:
        if not self._open:
            return "closed"
        if self._probe_at is not None or self._clock() - self._opened_at >= self.cfg.cooldown_s:
            return "half_open"
        return "open"

    @property
    def value(self) -> int:
        """0 closed, 1 half-open, 2 open."""
        return STATE_VALUE[self.state]

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        if not self._open:
            return True
        now = self._clock()
        if self._probe_at is not None:
            if now - self._probe_at < self.cfg.cooldown_s:
                return False  # the probe is still out
        elif now - self._opened_at < self.cfg.cooldown_s:
            return False
        self._probe_at = now
        return True

    def record_success(self) -> None:
        self._open = False
        self._failures = 0
        self._probe_at = None

    def record_failure(self) -> None:
        self._failures += 1
        if self._open or self._failures >= self.cfg.failure_threshold:
            self._open = True
            self._opened_at = self._clock()
            self._probe_at = None


def backoff_delay(
    attempt: int,
    cfg: RetryConfig,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before retrying after failed attempt number ``attempt`` (0-based).

    Exponential with full jitter: uniform(0, min(backoff_max_s, backoff_base_s * 2**attempt)).
    An upstream's Retry-After is honoured as a floor; one longer than ``max_retry_after_s``
    returns None: do not retry this backend, fall back to the next one instead.
    """
    if retry_after is not None and retry_after > cfg.max_retry_after_s:
        return None
    cap = min(cfg.backoff_max_s, cfg.backoff_base_s * (2.0**attempt))
    jittered = (rng or random).uniform(0.0, cap) if cap > 0 else 0.0
    if retry_after is not None:
        return max(retry_after, jittered)
    return jittered


async def call_with_retries(
    fn: Callable[[], Awaitable[T]],
    retry_cfg: RetryConfig,
    breaker: CircuitBreaker,
    on_retry: Callable[[int, UpstreamError], None] | None = None,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Call ``fn`` up to ``retry_cfg.max_attempts`` times, feeding the breaker.

    Retries only retryable ``UpstreamError``s (429, 5xx, timeouts, no answer), and only while
    the breaker allows; the caller has already asked ``breaker.allow()`` for the first attempt.
    ``on_retry(attempt, exc)`` is called before each retry's wait. The last error is re-raised.
    """
    attempt = 0
    while True:
        try:
            result = await fn()
        except UpstreamError as exc:
            if counts_as_failure(exc):
                breaker.record_failure()
            else:
                breaker.record_success()  # it answered sensibly; the request was at fault
            if not exc.retryable or attempt + 1 >= retry_cfg.max_attempts:
                raise
            delay = backoff_delay(attempt, retry_cfg, exc.retry_after, rng)
            if delay is None or not breaker.allow():
                raise
            if on_retry is not None:
                on_retry(attempt + 1, exc)
            await sleep(delay)
            attempt += 1
            continue
        breaker.record_success()
        return result
