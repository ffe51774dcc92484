from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from redis_harness import SHARED_URL, PrivateRedis, free_port, namespace_on_shared

from gateway.state import MemoryState, RedisState, build_state, period_bounds
from gateway.state.base import sliding_window
from gateway.state.redis_guard import RedisGuard


def ts(*args) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Errors:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> None:
        self.n += 1


@pytest.fixture
async def ns():
    async for n in namespace_on_shared():
        yield n


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("period", "now", "label", "end"),
    [
        ("minute", ts(2024, 3, 5, 10, 7, 59), "2024-03-05T10:07", ts(2024, 3, 5, 10, 8)),
        ("hour", ts(2024, 3, 5, 23, 30), "2024-03-05T23", ts(2024, 3, 6)),
        ("day", ts(2024, 2, 29, 12), "2024-02-29", ts(2024, 3, 1)),
        ("month", ts(2024, 12, 31, 23, 59, 59), "2024-12", ts(2025, 1, 1)),
        ("month", ts(2024, 1, 1), "2024-01", ts(2024, 2, 1)),
    ],
)
def test_period_bounds_are_utc_calendar_periods(period, now, label, end):
    assert period_bounds(period, now) == (label, end)


def test_unknown_period_is_refused():
    with pytest.raises(ValueError, match="unknown period"):
        period_bounds("fortnight", 0.0)


def test_sliding_window_weights_the_previous_window():
    # 10 per 60 s; previous window had 10, we are 30 s into this one with 4: estimate 5 + 4 = 9
    r = sliding_window(10, 60, 30.0, current=4, previous=10)
    assert r.allowed and r.remaining == 0
    r = sliding_window(10, 60, 30.0, current=5, previous=10)
    assert not r.allowed
    # 5 + 10*(1-(30+t)/60) <= 9  ->  t >= 6
    assert r.retry_after_s == pytest.approx(6.0)
    r = sliding_window(10, 60, 59.0, current=10, previous=0)
    assert not r.allowed and r.retry_after_s == pytest.approx(
        1.0 + 6.0
    )  # window end, then 10*(1-t/60) <= 9


# ---------------------------------------------------------------- both stores


async def _check_spend(state, clock: Clock) -> None:
    assert await state.get_spend("team:red", "day") == 0.0
    assert await state.incr_spend("team:red", 0.25, "day") == pytest.approx(0.25)
    assert await state.incr_spend("team:red", 0.5, "day") == pytest.approx(0.75)
    assert await state.get_spend("team:red", "day") == pytest.approx(0.75)
    assert await state.get_spend("team:blue", "day") == 0.0
    assert await state.get_spend("team:red", "month") == 0.0  # periods are separate totals
    clock.t += 86400  # the next UTC day starts from zero
    assert await state.get_spend("team:red", "day") == 0.0
    assert await state.incr_spend("team:red", 0.1, "day") == pytest.approx(0.1)


async def _check_rate(state, clock: Clock) -> None:
    results = [await state.hit_rate_limit("key:k1", 5, 60) for _ in range(7)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 2
    assert [r.remaining for r in results[:5]] == [4, 3, 2, 1, 0]
    refused = results[-1]
    assert 0 < refused.retry_after_s <= 120
    assert (await state.hit_rate_limit("key:other", 5, 60)).allowed  # scopes are separate
    clock.t += refused.retry_after_s + 0.01
    assert (await state.hit_rate_limit("key:k1", 5, 60)).allowed
    assert not (await state.hit_rate_limit("key:k1", 5, 60)).allowed
    clock.t += 130  # both windows slid out
    assert all([(await state.hit_rate_limit("key:k1", 5, 60)).allowed for _ in range(5)])


async def test_memory_state():
    clock = Clock(ts(2024, 6, 1, 12, 0, 10))
    state = MemoryState(clock=clock)
    await _check_spend(state, clock)
    await _check_rate(state, clock)
    with pytest.raises(ValueError):
        await state.hit_rate_limit("x", 0, 60)
    await state.close()


async def test_redis_state(ns):
    clock = Clock(ts(2024, 6, 1, 12, 0, 10))
    errors = Errors()
    state = RedisState(SHARED_URL, on_error=errors, namespace=ns, clock=clock)
    try:
        await _check_spend(state, clock)
        await _check_rate(state, clock)
        assert errors.n == 0
    finally:
        await state.close()


async def test_redis_spend_key_expires_after_its_period(ns):
    state = RedisState(SHARED_URL, namespace=ns)
    raw = aioredis.Redis.from_url(SHARED_URL)
    try:
        await state.incr_spend("team:red", 1.0, "hour")
        keys = [k async for k in raw.scan_iter(match=f"{ns}:spend:*")]
        assert len(keys) == 1
        ttl = await raw.ttl(keys[0])
        _, end = period_bounds("hour", time.time())
        assert end - time.time() + 3600 - 5 <= ttl <= end - time.time() + 3600 + 1
    finally:
        await raw.aclose()
        await state.close()


async def test_replicas_share_limits_atomically(ns):
    replicas = [RedisState(SHARED_URL, namespace=ns) for _ in range(2)]
    try:
        hits = await asyncio.gather(
            *[replicas[i % 2].hit_rate_limit("team:red", 20, 60) for i in range(60)]
        )
        assert sum(r.allowed for r in hits) == 20
        await asyncio.gather(
            *[replicas[i % 2].incr_spend("team:red", 0.1, "month") for i in range(30)]
        )
        assert await replicas[0].get_spend("team:red", "month") == pytest.approx(3.0)
        assert await replicas[1].get_spend("team:red", "month") == pytest.approx(3.0)
    finally:
        for r in replicas:
            await r.close()


async def test_unreachable_redis_fails_open_and_counts():
    errors = Errors()
    state = RedisState(f"redis://127.0.0.1:{free_port()}/0", on_error=errors)
    try:
        t = time.perf_counter()
        r = await state.hit_rate_limit("k", 1, 60)
        assert r.allowed and r.remaining == 1
        assert await state.incr_spend("team:red", 2.0, "day") == pytest.approx(
            2.0
        )  # last known + this
        assert await state.get_spend("team:red", "day") == pytest.approx(2.0)
        assert time.perf_counter() - t < 2.0  # fails fast: no connect storm, no hang
        assert errors.n == 3
    finally:
        await state.close()


async def test_state_survives_redis_dying_and_reconnects():
    server = PrivateRedis()
    server.start()
    errors = Errors()
    state = RedisState(
        server.url, guard=RedisGuard("test state", errors, backoff_s=0.05, max_backoff_s=0.1)
    )
    try:
        assert await state.incr_spend("team:red", 1.0, "day") == pytest.approx(1.0)
        assert (await state.hit_rate_limit("k", 1, 60)).allowed  # the first hit counts
        assert not (await state.hit_rate_limit("k", 1, 60)).allowed
        server.stop()
        assert (await state.hit_rate_limit("k", 1, 60)).allowed  # fail open
        assert await state.get_spend("team:red", "day") == pytest.approx(1.0)  # last known total
        assert errors.n == 2
        server.start()  # empty again: no persistence
        deadline = time.monotonic() + 5
        while not state.guard.up and time.monotonic() < deadline:
            await state.get_spend("team:red", "day")
            await asyncio.sleep(0.02)
        assert state.guard.up
        assert await state.incr_spend("team:red", 0.5, "day") == pytest.approx(0.5)
        assert (await state.hit_rate_limit("k2", 1, 60)).allowed
        assert not (await state.hit_rate_limit("k2", 1, 60)).allowed
    finally:
        await state.close()
        server.stop()


async def test_build_state():
    assert isinstance(build_state(None), MemoryState)
    s = build_state(SHARED_URL, on_error=Errors(), namespace="x")
    assert isinstance(s, RedisState)
    await s.close()


def test_public_surface():
    import gateway.state

    assert set(gateway.state.__all__) == {
        "MemoryState",
        "RateLimitResult",
        "RedisState",
        "SharedState",
        "build_state",
        "period_bounds",
    }
    assert all(hasattr(gateway.state, n) for n in gateway.state.__all__)
