"""RouteLLM's routing metrics (Ong et al. 2024, arXiv 2406.18665), pure numpy.

Route the highest-scored fraction of prompts to the strong model. For a share s of strong
calls, PGR(s) = (quality(s) - weak quality) / (strong quality - weak quality); CPT(x) is
the smallest share with PGR >= x; APGR is the mean PGR over all shares. Tied scores are
treated as a random order within the tie (their expected gain), so a constant scorer
scores exactly like random routing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class RoutingCurve:
    shares: np.ndarray  # [N+1] strong-call shares 0, 1/N, ..., 1
    pgr: np.ndarray  # [N+1]

    def cpt(self, target: float) -> float:
        """Smallest strong-call share reaching PGR >= target (1.0 if never)."""
        hit = np.nonzero(self.pgr >= target - 1e-12)[0]
        return float(self.shares[hit[0]]) if hit.size else 1.0

    def apgr(self) -> float:
        return float(np.trapezoid(self.pgr, self.shares))

    def quality_share(self, weak: float, strong: float, share: float) -> float:
        """Quality at ``share`` as a fraction of the strong model's quality."""
        pgr = float(np.interp(share, self.shares, self.pgr))
        return (weak + pgr * (strong - weak)) / strong


def routing_curve(
    scores: Sequence[float], weak_quality: Sequence[float], strong_quality: Sequence[float]
) -> RoutingCurve:
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weak_quality, dtype=np.float64)
    g = np.asarray(strong_quality, dtype=np.float64) - w  # gain of escalating each prompt
    n = s.size
    if n == 0 or w.size != n or g.size != n:
        raise ValueError("scores and qualities must be non-empty and of equal length")
    total = g.sum()
    if total <= 0:
        raise ValueError(
            "the strong model is not better than the weak one on this set: PGR undefined"
        )
    order = np.argsort(-s, kind="stable")
    s_sorted, g_sorted = s[order], g[order]
    # replace each gain by its tie group's mean: the expected gain under random tie-breaking
    _, start, counts = np.unique(-s_sorted, return_index=True, return_counts=True)
    group_mean = np.add.reduceat(g_sorted, start) / counts
    g_expected = np.repeat(group_mean, counts)
    cum = np.concatenate([[0.0], np.cumsum(g_expected)])  # [N+1]
    return RoutingCurve(shares=np.arange(n + 1) / n, pgr=cum / total)
