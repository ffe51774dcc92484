"""In-process LRU answer cache with a TTL (used when no Redis URL is configured)."""

from __future__ import annotations

import time
from collections import OrderedDict

from gateway.cache.base import CacheEntry, ResponseCache

__all__ = ["MemoryCache"]


class MemoryCache(ResponseCache):
    def __init__(
        self, max_entries: int, ttl_s: float, max_entry_bytes: int, clock=time.monotonic
    ) -> None:
        if max_entries < 1 or ttl_s <= 0 or max_entry_bytes < 1:
            raise ValueError("max_entries, ttl_s and max_entry_bytes must be positive")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.max_entry_bytes = max_entry_bytes
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, CacheEntry]] = (
            OrderedDict()
        )  # key -> (expires, entry)

    @property
    def available(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self._data)

    async def get(self, key: str) -> CacheEntry | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return item[1]

    async def set(self, key: str, entry: CacheEntry) -> None:
        if entry.size > self.max_entry_bytes:
            return
        self._data[key] = (self._clock() + self.ttl_s, entry)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def close(self) -> None:
        self._data.clear()
