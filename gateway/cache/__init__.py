"""Exact-match answer cache: key and decision, Redis or in-process store, SSE replay."""

from __future__ import annotations

from collections.abc import Callable

from gateway.cache.base import CacheEntry, ResponseCache
from gateway.cache.keys import CacheMode, cache_decision, cache_key
from gateway.cache.memory import MemoryCache
from gateway.cache.redis import RedisCache
from gateway.cache.sse import StreamAssembler, completion_to_sse
from gateway.config.schema import CacheConfig

__all__ = [
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
]


def build_cache(
    cfg: CacheConfig, on_error: Callable[[], None] | None = None
) -> ResponseCache | None:
    """The configured cache: Redis when ``redis_url`` is set, else an in-process LRU; None when disabled.

    ``on_error`` is called once per cache call that Redis failed or that was skipped while
    Redis is down. Nothing connects here; the first call does.
    """
    if not cfg.enabled:
        return None
    if cfg.redis_url:
        return RedisCache(
            cfg.redis_url, cfg.ttl_s, cfg.max_entry_bytes, cfg.namespace, on_error=on_error
        )
    return MemoryCache(cfg.max_entries, cfg.ttl_s, cfg.max_entry_bytes)
