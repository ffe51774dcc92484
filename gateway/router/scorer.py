"""LearnedScorer: the trained router behind the DifficultyScorer contract.

It raises on failure (a missing embedding model, a bug on odd input); the policy's scorer is
always wrapped in gateway.routing.fallback.FallbackScorer, the one place that answers a
failure with the heuristic and counts it. Scores of repeated prompts come from a small LRU
cache (system prompts and retries repeat a lot).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from gateway.router import artifact
from gateway.router.model import RouterModel
from gateway.routing.scorer import Messages, prompt_text

DEFAULT_CACHE_SIZE = 4096


class LearnedScorer:
    name = "learned"

    def __init__(self, model: RouterModel, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.model = model
        self._cache: OrderedDict[tuple[str, int, bool], float] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path | None = None, **kw) -> LearnedScorer:
        """Load an artefact (None or "builtin": the shipped one); RouterModelError if unusable."""
        return cls(artifact.load(path), **kw)

    def warm_up(self) -> None:
        """Load the embedding model now rather than on the first request."""
        self.score([{"role": "user", "content": "warm up"}])

    @staticmethod
    def _key(messages: Messages) -> tuple[str, int, bool]:
        turns = sum(1 for m in messages if m.get("role") == "user")
        system = any(m.get("role") == "system" for m in messages)
        return prompt_text(messages), turns, system

    def score(self, messages: Messages) -> float:
        key = self._key(messages)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        value = float(self.model.predict([messages])[0])
        with self._lock:
            self._cache[key] = value
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return value

    def score_batch(self, batch: Sequence[Messages]) -> list[float]:
        return [float(v) for v in self.model.predict(batch)]
