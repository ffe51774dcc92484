"""Shared state in Redis, so budgets and rate limits hold across gateway replicas.

Spend: one INCRBYFLOAT key per (scope, UTC period), expiring an hour after its period, updated in a
MULTI transaction. Rate limits: a sliding-window counter (this and the previous fixed
window) checked and incremented atomically by a Lua script. Both keys of a scope share a
hash tag, so the script also runs on Redis Cluster. On Redis failure: fail open, count it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.state.base import RateLimitResult, SharedState, retry_after_s, sliding_window
from gateway.state.periods import period_bounds
from gateway.state.redis_guard import DEFAULT_TIMEOUT_S, REDIS_ERRORS, RedisGuard, make_client

__all__ = ["RedisState"]

SPEND_GRACE_S = 3600  # keep a closed period's total a while for late readers

# KEYS: current window, previous window. ARGV: limit, weight of the previous window, ttl, cost.
_RATE_LUA = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local cost = tonumber(ARGV[4] or '1')
if prev * tonumber(ARGV[2]) + cur + cost <= tonumber(ARGV[1]) then
  redis.call('INCRBY', KEYS[1], cost)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
  return {1, cur, prev}
end
return {0, cur, prev}
"""


# KEYS: a window. ARGV: delta. Applied only if the window is still alive; never below 0.
_ADJUST_LUA = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local v = tonumber(cur) + tonumber(ARGV[1])
if v < 0 then v = 0 end
redis.call('SET', KEYS[1], v, 'KEEPTTL')
return 1
"""


class RedisState(SharedState):
    def __init__(
        self,
        url: str,
        on_error: Callable[[], None] | None = None,
        namespace: str = "gw",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        guard: RedisGuard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._r = make_client(url, timeout_s)
        self._ns = namespace
        self._clock = clock
        self.guard = guard or RedisGuard("shared state", on_error)
        self._rate = self._r.register_script(_RATE_LUA)
        self._adjust = self._r.register_script(_ADJUST_LUA)
        # Last known totals, answered (fail-open) while Redis is unreachable: (scope, period) -> (label, usd)
        self._last: dict[tuple[str, str], tuple[str, float]] = {}

    def _spend_key(self, scope: str, period: str, label: str) -> str:
        return f"{self._ns}:spend:{{{scope}}}:{period}:{label}"

    def _known(self, scope: str, period: str, label: str) -> float:
        got = self._last.get((scope, period))
        return got[1] if got is not None and got[0] == label else 0.0

    async def incr_spend(self, scope: str, usd: float, period: str) -> float:
        now = self._clock()
        label, end = period_bounds(period, now)
        if self.guard.should_try():
            try:
                async with self._r.pipeline(transaction=True) as p:
                    p.incrbyfloat(self._spend_key(scope, period, label), usd)
                    # relative, so a skew between our clock and Redis's cannot expire it early
                    p.expire(self._spend_key(scope, period, label), int(end - now) + SPEND_GRACE_S)
                    total_raw, _ = await p.execute()
            except REDIS_ERRORS as exc:
                self.guard.failed(exc)
            else:
                self.guard.ok()
                total = float(total_raw)
                self._last[(scope, period)] = (label, total)
                return total
        else:
            self.guard.skipped()
        total = self._known(scope, period, label) + usd
        self._last[(scope, period)] = (label, total)
        return total

    async def get_spend(self, scope: str, period: str) -> float:
        label, _ = period_bounds(period, self._clock())
        if not self.guard.should_try():
            self.guard.skipped()
            return self._known(scope, period, label)
        try:
            raw = await self._r.get(self._spend_key(scope, period, label))
        except REDIS_ERRORS as exc:
            self.guard.failed(exc)
            return self._known(scope, period, label)
        self.guard.ok()
        total = float(raw) if raw is not None else 0.0
        self._last[(scope, period)] = (label, total)
        return total

    async def hit_rate_limit(
        self, scope: str, limit: int, window_s: int, cost: int = 1
    ) -> RateLimitResult:
        if limit < 1 or window_s < 1 or cost < 1:
            raise ValueError("limit, window_s and cost must be positive")
        if not self.guard.should_try():
            self.guard.skipped()
            return RateLimitResult(True, 0.0, limit)
        now = self._clock()
        idx = int(now // window_s)
        elapsed = now - idx * window_s
        base = f"{self._ns}:rl:{{{scope}:{window_s}}}"
        try:
            allowed, cur, prev = await self._rate(
                keys=[f"{base}:{idx}", f"{base}:{idx - 1}"],
                args=[limit, repr(max(0.0, 1.0 - elapsed / window_s)), 2 * window_s, cost],
            )
        except REDIS_ERRORS as exc:
            self.guard.failed(exc)
            return RateLimitResult(True, 0.0, limit)
        self.guard.ok()
        res = sliding_window(limit, window_s, elapsed, int(cur), int(prev), cost)
        if bool(allowed) == res.allowed:
            return RateLimitResult(True, 0.0, res.remaining, idx) if allowed else res
        # Float rounding on the boundary: Redis's decision stands.
        if allowed:
            return RateLimitResult(True, 0.0, 0, idx)
        return RateLimitResult(
            False, retry_after_s(limit - cost + 1, window_s, elapsed, int(cur), int(prev)), 0
        )

    async def adjust_window(self, scope: str, window_s: int, window: int, delta: int) -> None:
        if delta == 0 or window < 0:
            return
        if not self.guard.should_try():
            self.guard.skipped()
            return
        key = f"{self._ns}:rl:{{{scope}:{window_s}}}:{window}"
        try:
            # only a window that still exists (a late reconcile must not resurrect one)
            await self._adjust(keys=[key], args=[delta])
        except REDIS_ERRORS as exc:
            self.guard.failed(exc)
            return
        self.guard.ok()

    async def put_blob(self, key: str, value: bytes, ttl_s: int) -> bool:
        if not self.guard.should_try():
            self.guard.skipped()
            return False
        try:
            await self._r.set(f"{self._ns}:blob:{key}", value, ex=ttl_s)
        except REDIS_ERRORS as exc:
            self.guard.failed(exc)
            return False
        self.guard.ok()
        return True

    async def get_blob(self, key: str) -> bytes | None:
        if not self.guard.should_try():
            self.guard.skipped()
            return None
        try:
            raw = await self._r.get(f"{self._ns}:blob:{key}")
        except REDIS_ERRORS as exc:
            self.guard.failed(exc)
            return None
        self.guard.ok()
        return raw if isinstance(raw, bytes) else None

    async def delete_blob(self, key: str) -> bool:
        if not self.guard.should_try():
            self.guard.skipped()
            return False
        try:
            n = await self._r.delete(f"{self._ns}:blob:{key}")
        except REDIS_ERRORS as exc:
            self.guard.failed(exc)
            return False
        self.guard.ok()
        return bool(n)

    async def close(self) -> None:
        await self._r.aclose()
