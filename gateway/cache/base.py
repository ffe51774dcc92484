"""The response cache's contract and its one value type."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import orjson

__all__ = ["CacheEntry", "ResponseCache"]

_FORMAT = 1


@dataclass(slots=True)
class CacheEntry:
    """A whole (non-streamed) OpenAI-format answer and what it cost to make."""

    body: bytes  # chat.completion / text_completion / embeddings list JSON, as sent to clients
    model: str  # the model that actually answered
    backend: str  # the policy's name of the backend that answered
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created_at: float = 0.0  # unix seconds

    def to_bytes(self) -> bytes:
        """A one-line JSON header, a newline, then the body untouched (no re-encoding)."""
        head = orjson.dumps(
            [
                _FORMAT,
                self.model,
                self.backend,
                self.prompt_tokens,
                self.completion_tokens,
                self.created_at,
            ]
        )
        return head + b"\n" + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> CacheEntry:
        """Inverse of ``to_bytes``; raises ValueError on anything else."""
        head, sep, body = data.partition(b"\n")
        if not sep:
            raise ValueError("not a cache entry: no header line")
        try:
            fmt, model, backend, pt, ct, created = orjson.loads(head)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise ValueError("not a cache entry: bad header") from exc
        if fmt != _FORMAT:
            raise ValueError(f"cache entry format {fmt!r} is not {_FORMAT}")
        return cls(body, model, backend, pt, ct, created)

    @property
    def size(self) -> int:
        return len(self.body)


class ResponseCache(ABC):
    """Exact-match answer cache. Implementations never raise into the request path: a
    failing store answers ``get`` with None and drops ``set``, and reports it by callback."""

    @property
    @abstractmethod
    def available(self) -> bool:
        """False while the store is known to be unreachable."""

    @abstractmethod
    async def get(self, key: str) -> CacheEntry | None: ...

    @abstractmethod
    async def set(self, key: str, entry: CacheEntry) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...
