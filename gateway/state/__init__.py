"""Shared state (spend per period, rate limits) across replicas: Redis, or in-process."""

from __future__ import annotations

from collections.abc import Callable

from gateway.state.base import RateLimitResult, SharedState
from gateway.state.memory import MemoryState
from gateway.state.periods import period_bounds
from gateway.state.redis import RedisState

__all__ = [
    "MemoryState",
    "RateLimitResult",
    "RedisState",
    "SharedState",
    "build_state",
    "period_bounds",
]


def build_state(
    url: str | None, on_error: Callable[[], None] | None = None, namespace: str = "gw"
) -> SharedState:
    """``RedisState`` when a Redis URL is given, else ``MemoryState`` (one replica only). Connects lazily."""
    if url:
        return RedisState(url, on_error=on_error, namespace=namespace)
    return MemoryState()
