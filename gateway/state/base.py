"""Shared state across gateway replicas: spend per period and request-rate limits.

Implementations never raise into the request path: when their store fails they fail open
(the request is served, the error is counted through ``on_error``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

__all__ = ["RateLimitResult", "SharedState", "retry_after_s", "sliding_window"]


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    allowed: bool
    retry_after_s: float  # 0 when allowed
    remaining: int  # requests (or tokens) left in the window after this one
    window: int = -1  # index of the fixed window it was counted in (for adjust_window)


class SharedState(ABC):
    # Blobs (stored Responses-API answers): not abstract, so a state without them still works
    # for everything else; both implementations below override them.
    async def put_blob(self, key: str, value: bytes, ttl_s: int) -> bool:
        """Keep ``value`` under ``key`` for ``ttl_s`` seconds; False when the store failed."""
        return False

    async def get_blob(self, key: str) -> bytes | None:
        return None

    async def delete_blob(self, key: str) -> bool:
        """True when something was deleted."""
        return False

    @abstractmethod
    async def incr_spend(self, scope: str, usd: float, period: str) -> float:
        """Add ``usd`` to ``scope``'s spend in the current UTC ``period``; return the period's total."""

    @abstractmethod
    async def get_spend(self, scope: str, period: str) -> float:
        """``scope``'s spend in the current UTC ``period`` (0 when none)."""

    @abstractmethod
    async def hit_rate_limit(
        self, scope: str, limit: int, window_s: int, cost: int = 1
    ) -> RateLimitResult:
        """Count ``cost`` (1 request, or a token estimate) against ``limit`` per ``window_s``
        (sliding window); refused ones are not counted."""

    @abstractmethod
    async def adjust_window(self, scope: str, window_s: int, window: int, delta: int) -> None:
        """Add ``delta`` (negative: give back) to the fixed ``window`` a hit was counted in:
        reconciles a token reservation with the real usage."""

    @abstractmethod
    async def close(self) -> None: ...


def sliding_window(
    limit: int, window_s: int, elapsed_s: float, current: int, previous: int, cost: int = 1
) -> RateLimitResult:
    """The sliding-window-counter estimate (two fixed windows, the previous one weighted by how
    much of it still overlaps the sliding window) after a request of ``cost`` that was counted
    in ``current`` if allowed. ``current`` and ``previous`` are counts *before* this request.
    """
    weight = max(0.0, 1.0 - elapsed_s / window_s)
    estimate = previous * weight + current
    if estimate + cost <= limit:
        return RateLimitResult(True, 0.0, max(0, math.floor(limit - estimate - cost)))
    # one more request of this cost fits once the estimate is <= limit - cost
    return RateLimitResult(
        False, retry_after_s(limit - cost + 1, window_s, elapsed_s, current, previous), 0
    )


def retry_after_s(
    limit: int, window_s: int, elapsed_s: float, current: int, previous: int
) -> float:
    """Seconds until one more request fits, assuming no other requests arrive meanwhile."""
    room = limit - 1 - current  # what the previous window's weighted share must fall to
    if room >= 0 and previous > 0:
        # previous * (1 - (elapsed + t) / window) <= room
        t = window_s * (1.0 - room / previous) - elapsed_s
        return max(t, 0.001)
    # Wait for this window to end; then this window's count slides out in turn.
    to_end = window_s - elapsed_s
    if current <= 0:
        return max(to_end, 0.001)
    t2 = window_s * (1.0 - (limit - 1) / current) if limit - 1 < current else 0.0
    return max(to_end + t2, 0.001)
