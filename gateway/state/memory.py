"""In-process shared state, for a single replica (or tests)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.state.base import RateLimitResult, SharedState, sliding_window
from gateway.state.periods import period_bounds

__all__ = ["MemoryState"]

MAX_BLOBS = 10_000


class MemoryState(SharedState):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._spend: dict[
            tuple[str, str, str], tuple[float, float]
        ] = {}  # (scope, period, label) -> (usd, end)
        self._windows: dict[tuple[str, int, int], int] = {}  # (scope, window_s, index) -> count
        self._blobs: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # key -> (value, end)

    async def incr_spend(self, scope: str, usd: float, period: str) -> float:
        label, end = period_bounds(period, self._clock())
        key = (scope, period, label)
        total = self._spend.get(key, (0.0, end))[0] + usd
        self._spend[key] = (total, end)
        if len(self._spend) > 4096:
            self._expire_spend()
        return total

    async def get_spend(self, scope: str, period: str) -> float:
        label, _ = period_bounds(period, self._clock())
        return self._spend.get((scope, period, label), (0.0, 0.0))[0]

    async def hit_rate_limit(
        self, scope: str, limit: int, window_s: int, cost: int = 1
    ) -> RateLimitResult:
        if limit < 1 or window_s < 1 or cost < 1:
            raise ValueError("limit, window_s and cost must be positive")
        now = self._clock()
        idx = int(now // window_s)
        cur_key = (scope, window_s, idx)
        current = self._windows.get(cur_key, 0)
        previous = self._windows.get((scope, window_s, idx - 1), 0)
        res = sliding_window(limit, window_s, now - idx * window_s, current, previous, cost)
        if res.allowed:
            self._windows[cur_key] = current + cost
            if current == 0:  # a window opens: sweep dead ones
                self._expire_windows()
            return RateLimitResult(True, 0.0, res.remaining, idx)
        return res

    async def adjust_window(self, scope: str, window_s: int, window: int, delta: int) -> None:
        key = (scope, window_s, window)
        if key in self._windows:
            self._windows[key] = max(0, self._windows[key] + delta)

    async def put_blob(self, key: str, value: bytes, ttl_s: int) -> bool:
        self._blobs[key] = (value, self._clock() + ttl_s)
        self._blobs.move_to_end(key)
        while len(self._blobs) > MAX_BLOBS:  # oldest first: one replica's memory is bounded
            self._blobs.popitem(last=False)
        return True

    async def get_blob(self, key: str) -> bytes | None:
        got = self._blobs.get(key)
        if got is None:
            return None
        if got[1] <= self._clock():
            del self._blobs[key]
            return None
        return got[0]

    async def delete_blob(self, key: str) -> bool:
        return self._blobs.pop(key, None) is not None

    async def close(self) -> None:
        self._blobs.clear()
        self._spend.clear()
        self._windows.clear()

    def _expire_spend(self) -> None:
        now = self._clock()
        for k in [k for k, (_, end) in self._spend.items() if end <= now]:
            del self._spend[k]

    def _expire_windows(self) -> None:
        now = self._clock()  # windows older than their scope's previous one count no more
        for k in [k for k in self._windows if k[2] < int(now // k[1]) - 1]:
            del self._windows[k]
