"""LearnedScorer: the trained router behind the DifficultyScorer contract.

Never raises from ``score``/``score_batch``: if the learned path fails (artefact or embedding
model missing, a bug on odd input), it answers with the heuristic scorer and counts the
failure in ``failures`` (exported by the gateway as a metric). Scores of repeated prompts come
from a small LRU cache (system prompts and retries repeat a lot).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gateway.router import artifact
from gateway.router.errors import RouterError
from gateway.router.model import RouterModel
from gateway.routing.heuristic import HeuristicScorer
from gateway.routing.scorer import Messages, prompt_text

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 4096
# what the learned path can raise on bad input or a broken install, beyond our own errors
_LEARNED_PATH_ERRORS = (RouterError, OSError, ValueError, TypeError, RuntimeError, IndexError)


class LearnedScorer:
    name = "learned"

    def __init__(
        self,
        model: RouterModel | None,
        *,
        fallback: HeuristicScorer | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        load_error: str | None = None,
    ) -> None:
        self.model = model
        self.fallback = fallback or HeuristicScorer()
        self.failures = 0  # learned-path failures answered by the fallback
        self.load_error = load_error
        self._cache: OrderedDict[tuple[str, int, bool], float] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path | None = None, *, strict: bool = False, **kw) -> LearnedScorer:
        """Load an artefact (None or "builtin": the shipped one). With ``strict=False`` a bad
        artefact yields a scorer that always falls back (and counts it), so a gateway still
        starts; ``strict=True`` raises RouterModelError instead."""
        try:
            return cls(artifact.load(path), **kw)
        except RouterError as exc:
            if strict:
                raise
            log.error("router artefact unusable, scoring with the heuristic: %s", exc)
            return cls(None, load_error=str(exc), **kw)

    def warm_up(self) -> None:
        """Load the embedding model now rather than on the first request."""
        self.score([{"role": "user", "content": "warm up"}])

    @staticmethod
    def _key(messages: Messages) -> tuple[str, int, bool]:
        turns = sum(1 for m in messages if m.get("role") == "user")
        system = any(m.get("role") == "system" for m in messages)
        return prompt_text(messages), turns, system

    def score(self, messages: Messages) -> float:
        try:
            key = self._key(messages)
        except (AttributeError, TypeError):
            self._count(1)
            return self._fallback_one(messages)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        s = self._learned([messages])
        if s is None:
            return self._fallback_one(messages)
        value = s[0]
        with self._lock:
            self._cache[key] = value
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return value

    def score_batch(self, batch: Sequence[Messages]) -> list[float]:
        s = self._learned(batch)
        if s is not None:
            return s
        return [self._fallback_one(m) for m in batch]

    def _learned(self, batch: Sequence[Messages]) -> list[float] | None:
        if self.model is None:
            self._count(len(batch))
            return None
        try:
            p = self.model.predict(batch)
        except _LEARNED_PATH_ERRORS as exc:
            self._count(len(batch))
            log.warning(
                "learned router failed (%s: %s); using the heuristic", type(exc).__name__, exc
            )
            return None
        if not np.isfinite(p).all():
            self._count(len(batch))
            log.warning("learned router produced non-finite scores; using the heuristic")
            return None
        return [float(v) for v in np.clip(p, 0.0, 1.0)]

    def _count(self, n: int) -> None:
        with self._lock:
            self.failures += n

    def _fallback_one(self, messages: Messages) -> float:
        try:
            return float(self.fallback.score(messages))
        except (AttributeError, TypeError, ValueError):
            return 0.5  # unreadable messages: neither path can judge; stay neutral
