from __future__ import annotations

import pytest

from gateway.cache import CacheEntry, MemoryCache, RedisCache, build_cache
from gateway.config.schema import CacheConfig


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def entry(text: str = "x") -> CacheEntry:
    body = (
        b'{"object":"chat.completion","choices":[{"message":{"content":"' + text.encode() + b'"}}]}'
    )
    return CacheEntry(
        body=body, model="m", backend="local", prompt_tokens=3, completion_tokens=1, created_at=5.0
    )


def test_entry_bytes_round_trip_keeps_body_verbatim():
    e = entry("héllo\nnewline")
    back = CacheEntry.from_bytes(e.to_bytes())
    assert back == e
    assert e.to_bytes().endswith(e.body)


@pytest.mark.parametrize("bad", [b"", b"no newline", b"[9,1]\n{}", b"not json\n{}", b'{"a":1}\n{}'])
def test_entry_from_bad_bytes_is_a_value_error(bad):
    with pytest.raises(ValueError):
        CacheEntry.from_bytes(bad)


async def test_get_set_and_ttl():
    clock = Clock()
    c = MemoryCache(max_entries=10, ttl_s=60, max_entry_bytes=1000, clock=clock)
    assert await c.get("k") is None
    await c.set("k", entry("a"))
    assert (await c.get("k")).body == entry("a").body
    clock.t += 59.9
    assert await c.get("k") is not None
    clock.t += 0.2
    assert await c.get("k") is None
    assert len(c) == 0


async def test_lru_evicts_the_least_recently_used():
    c = MemoryCache(max_entries=2, ttl_s=60, max_entry_bytes=1000)
    await c.set("a", entry("a"))
    await c.set("b", entry("b"))
    await c.get("a")  # a is now the most recent
    await c.set("c", entry("c"))
    assert await c.get("b") is None
    assert await c.get("a") is not None and await c.get("c") is not None
    assert len(c) == 2


async def test_overwrite_refreshes_ttl_and_oversized_entries_are_skipped():
    clock = Clock()
    c = MemoryCache(max_entries=5, ttl_s=10, max_entry_bytes=len(entry("a").body), clock=clock)
    await c.set("k", entry("a"))
    clock.t += 8
    await c.set("k", entry("b"))
    clock.t += 8
    assert (await c.get("k")).body == entry("b").body
    await c.set("big", entry("much too long"))
    assert await c.get("big") is None


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        MemoryCache(max_entries=0, ttl_s=1, max_entry_bytes=1)


async def test_build_cache_picks_the_store():
    assert build_cache(CacheConfig(enabled=False)) is None
    mem = build_cache(CacheConfig(max_entries=3))
    assert isinstance(mem, MemoryCache) and mem.max_entries == 3 and mem.available
    red = build_cache(CacheConfig(redis_url="redis://127.0.0.1:6379/0", ttl_s=5))
    assert isinstance(red, RedisCache) and red.ttl_s == 5
    await red.close()


def test_public_surface():
    import gateway.cache

    assert set(gateway.cache.__all__) == {
        "CacheEntry",
        "CacheMode",
        "MemoryCache",
        "RedisCache",
        "ResponseCache",
        "StreamAssembler",
        "build_cache",
        "cache_decision",
        "cache_key",
        "completion_to_sse",
    }
    assert all(hasattr(gateway.cache, n) for n in gateway.cache.__all__)
