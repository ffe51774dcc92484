from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from redis_harness import SHARED_URL, PrivateRedis, free_port, namespace_on_shared

from gateway.cache import CacheEntry, RedisCache
from gateway.state.redis_guard import RedisGuard


@pytest.fixture
async def ns():
    async for n in namespace_on_shared():
        yield n


def entry(text: str = "x") -> CacheEntry:
    return CacheEntry(
        body=b'{"v":"' + text.encode() + b'"}',
        model="m",
        backend="b",
        prompt_tokens=1,
        completion_tokens=2,
        created_at=1.5,
    )


class Errors:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> None:
        self.n += 1


async def test_round_trip_with_ttl_on_real_redis(ns):
    errors = Errors()
    c = RedisCache(SHARED_URL, ttl_s=30, max_entry_bytes=1000, namespace=ns, on_error=errors)
    try:
        assert await c.get("k1") is None
        await c.set("k1", entry("a"))
        assert await c.get("k1") == entry("a")
        raw = aioredis.Redis.from_url(SHARED_URL)
        ttl = await raw.ttl(f"{ns}:cache:k1")
        await raw.aclose()
        assert 25 <= ttl <= 30
        assert errors.n == 0 and c.available
    finally:
        await c.close()


async def test_namespaces_do_not_share_entries(ns):
    a = RedisCache(SHARED_URL, ttl_s=30, max_entry_bytes=1000, namespace=ns)
    b = RedisCache(SHARED_URL, ttl_s=30, max_entry_bytes=1000, namespace=ns + "-other")
    try:
        await a.set("k", entry())
        assert await b.get("k") is None
        assert await a.get("k") is not None
    finally:
        await a.close()
        await b.close()


async def test_oversized_and_unreadable_entries(ns):
    c = RedisCache(SHARED_URL, ttl_s=30, max_entry_bytes=10, namespace=ns)
    raw = aioredis.Redis.from_url(SHARED_URL)
    try:
        await c.set("big", entry("more than ten bytes"))
        assert await raw.exists(f"{ns}:cache:big") == 0
        await raw.set(f"{ns}:cache:junk", b"written by something else")
        assert await c.get("junk") is None
    finally:
        await raw.aclose()
        await c.close()


async def test_unreachable_redis_is_a_fast_miss_and_counted():
    errors = Errors()
    c = RedisCache(
        f"redis://127.0.0.1:{free_port()}/0", ttl_s=30, max_entry_bytes=1000, on_error=errors
    )
    try:
        t = time.perf_counter()
        assert await c.get("k") is None
        await c.set("k", entry())
        assert await c.get("k") is None
        assert time.perf_counter() - t < 2.0  # fails fast: no connect storm, no hang
        assert errors.n == 3
        assert not c.available
    finally:
        await c.close()


async def test_redis_dies_and_comes_back():
    server = PrivateRedis()
    server.start()
    errors = Errors()
    guard = RedisGuard("test cache", errors, backoff_s=0.05, max_backoff_s=0.1)
    c = RedisCache(server.url, ttl_s=30, max_entry_bytes=1000, guard=guard)
    try:
        await c.set("k", entry("before"))
        assert (await c.get("k")).body == entry("before").body
        server.stop()
        t = time.perf_counter()
        for _ in range(50):  # one failure, then skipped calls: no connect storm
            assert await c.get("k") is None
        assert time.perf_counter() - t < 2.0  # fails fast: no connect storm, no hang
        assert errors.n == 50 and not c.available
        server.start()  # same port, empty (no persistence)
        deadline = time.monotonic() + 5
        while not c.available and time.monotonic() < deadline:
            await c.get("k")
            await asyncio.sleep(0.02)
        assert c.available
        await c.set("k", entry("after"))
        assert (await c.get("k")).body == entry("after").body
    finally:
        await c.close()
        server.stop()


def test_guard_lets_one_probe_through_after_the_backoff():
    now = [0.0]
    errors = Errors()
    g = RedisGuard(
        "g", errors, backoff_s=1.0, max_backoff_s=4.0, failure_threshold=2, clock=lambda: now[0]
    )
    assert g.should_try()
    g.failed(ConnectionError("refused"))
    assert g.up and g.should_try()  # one failure is not enough
    g.failed(ConnectionError("refused"))
    assert not g.up and not g.should_try()
    now[0] = 1.0
    assert g.should_try()  # the probe
    assert not g.should_try()  # only one at a time
    g.failed(OSError("still down"))
    now[0] = 2.5
    assert not g.should_try()  # backoff doubled to 2 s
    now[0] = 3.0
    assert g.should_try()
    g.ok()
    assert g.up and g.should_try()
    assert errors.n == 3


def test_a_probe_that_never_reports_back_expires():
    from gateway.state.redis_guard import PROBE_EXPIRY_S

    now = [0.0]
    g = RedisGuard("g", Errors(), backoff_s=1.0, failure_threshold=1, clock=lambda: now[0])
    g.failed(ConnectionError("refused"))
    now[0] = 1.0
    assert g.should_try()  # the probe's call is then cancelled: neither ok() nor failed()
    now[0] = 1.0 + PROBE_EXPIRY_S / 2
    assert not g.should_try()
    now[0] = 1.0 + PROBE_EXPIRY_S
    assert g.should_try()  # Redis is tried again instead of being skipped forever
    g.ok()
    assert g.up


def test_guard_does_not_mark_down_on_a_redis_reply_error():
    from redis.exceptions import ResponseError

    errors = Errors()
    g = RedisGuard("g", errors)
    g.failed(ResponseError("WRONGTYPE"))
    assert g.up and errors.n == 1
