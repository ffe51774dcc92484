"""Answer cache in Redis, shared by every replica. A dead Redis costs a skipped lookup."""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.cache.base import CacheEntry, ResponseCache
from gateway.state.redis_guard import DEFAULT_TIMEOUT_S, REDIS_ERRORS, RedisGuard, make_client

__all__ = ["RedisCache"]

log = logging.getLogger("gateway.cache")


class RedisCache(ResponseCache):
    def __init__(
        self,
        url: str,
        ttl_s: int,
        max_entry_bytes: int,
        namespace: str = "gw",
        on_error: Callable[[], None] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        guard: RedisGuard | None = None,
    ) -> None:
        if ttl_s < 1 or max_entry_bytes < 1:
            raise ValueError("ttl_s and max_entry_bytes must be positive")
        self.ttl_s = ttl_s
        self.max_entry_bytes = max_entry_bytes
        self._prefix = f"{namespace}:cache:"
        self._r = make_client(url, timeout_s)
        self.guard = guard or RedisGuard("response cache", on_error)

    @property
    def available(self) -> bool:
        return self.guard.up

    async def get(self, key: str) -> CacheEntry | None:
        if not self.guard.should_try():
            self.guard.skipped()
            return None
        try:
            data = await self._r.get(self._prefix + key)
        except REDIS_ERRORS as exc:
            self.guard.failed(exc)
            return None
        self.guard.ok()
        if not isinstance(data, bytes):  # None: a miss (the client never decodes to str)
            return None
        try:
            return CacheEntry.from_bytes(data)
        except ValueError as exc:  # written by another version, or not by us
            log.warning("ignoring unreadable cache entry %s: %s", key[:16], exc)
            return None

    async def set(self, key: str, entry: CacheEntry) -> None:
        if entry.size > self.max_entry_bytes:
            return
        if not self.guard.should_try():
            self.guard.skipped()
            return
        try:
            await self._r.set(self._prefix + key, entry.to_bytes(), ex=self.ttl_s)
        except REDIS_ERRORS as exc:
            self.guard.failed(exc)
            return
        self.guard.ok()

    async def close(self) -> None:
        await self._r.aclose()
