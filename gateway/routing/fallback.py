"""The one place a difficulty score falls back.

``FallbackScorer`` wraps the scorer a policy names (the learned router, the heuristic, or
none when the learned one could not load) and never raises: when the primary raises one of
``PRIMARY_ERRORS`` or returns a non-finite score, the heuristic answers and ``failures``
counts it (serve exports it as gateway_router_failures_total; simulate reports it). The
pipeline, calibration and simulate call this wrapper and keep no fallback of their own.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence

from gateway.routing.heuristic import HeuristicScorer
from gateway.routing.scorer import DifficultyScorer, Messages

log = logging.getLogger(__name__)

__all__ = ["FallbackScorer", "PRIMARY_ERRORS"]

# what a scorer can raise on odd input or a broken install (the router's own errors are
# ValueErrors); anything else is a bug and propagates
PRIMARY_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OSError,
    RuntimeError,
)
NEUTRAL = 0.5  # when not even the heuristic can read the messages


class FallbackScorer:
    def __init__(
        self,
        primary: DifficultyScorer | None,
        *,
        fallback: DifficultyScorer | None = None,
        load_error: str | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback or HeuristicScorer()
        self.name = primary.name if primary is not None else self.fallback.name
        self.load_error = load_error  # why the primary is missing, when it is
        self.failures = 0  # scores the fallback answered
        self._lock = threading.Lock()

    def score(self, messages: Messages) -> float:
        if self.primary is not None:
            try:
                value = float(self.primary.score(messages))
                if math.isfinite(value):
                    return min(max(value, 0.0), 1.0)
                log.warning("difficulty scorer %s gave a non-finite score", self.name)
            except PRIMARY_ERRORS as exc:
                log.warning(
                    "difficulty scorer %s failed (%s: %s); using the heuristic",
                    self.name,
                    type(exc).__name__,
                    exc,
                )
        self._count(1)
        return self._fallback_one(messages)

    def score_batch(self, batch: Sequence[Messages]) -> list[float]:
        if self.primary is not None:
            try:
                got = [float(v) for v in self.primary.score_batch(batch)]
                if len(got) == len(batch) and all(math.isfinite(v) for v in got):
                    return [min(max(v, 0.0), 1.0) for v in got]
                log.warning("difficulty scorer %s gave non-finite scores", self.name)
            except PRIMARY_ERRORS as exc:
                log.warning(
                    "difficulty scorer %s failed on a batch (%s: %s); using the heuristic",
                    self.name,
                    type(exc).__name__,
                    exc,
                )
        self._count(len(batch))
        return [self._fallback_one(m) for m in batch]

    def _count(self, n: int) -> None:
        with self._lock:
            self.failures += n

    def _fallback_one(self, messages: Messages) -> float:
        try:
            return float(self.fallback.score(messages))
        except PRIMARY_ERRORS:
            return NEUTRAL  # unreadable messages: neither path can judge; stay neutral
