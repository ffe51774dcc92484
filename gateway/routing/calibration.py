"""Calibration knobs for the difficulty threshold: pure functions, no I/O.

* ``threshold_for_share(scores, share)``: RouteLLM-style calibration. Given a sample of
  scores from recent traffic, the threshold such that a fraction ``share`` of that sample
  scores strictly above it (escalated when ``score > threshold``).
* ``SpendCapController``: adapts the threshold so the proprietary spend of a period stays
  within its budget, escalating the hardest (highest-scored) requests first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["threshold_for_share", "SpendCapController"]


def threshold_for_share(scores: Sequence[float], share: float) -> float:
    """Threshold t so that about ``share`` of ``scores`` satisfy ``score > t``.

    share = 0 -> t = 1.0 (nothing escalates; scores are in [0, 1]); share = 1 -> t just below
    the smallest score (everything escalates). In between, t is the k-th largest score's
    lower neighbour, k = round(share * n): the k highest scores escalate. Ties at the cut
    escalate together (a threshold cannot split equal scores).
    """
    if not 0.0 <= share <= 1.0 or math.isnan(share):
        raise ValueError(f"share must be in [0, 1], got {share}")
    vals = sorted((float(s) for s in scores), reverse=True)
    if not vals:
        raise ValueError("need at least one score to calibrate a threshold")
    if any(math.isnan(v) for v in vals):
        raise ValueError("scores must not be NaN")
    k = round(share * len(vals))
    if k == 0:
        return max(1.0, vals[0])
    if k >= len(vals):
        return math.nextafter(vals[-1], -math.inf)
    # midpoint between the k-th and (k+1)-th highest: the k highest are strictly above it
    hi, lo = vals[k - 1], vals[k]
    return (hi + lo) / 2.0 if hi > lo else math.nextafter(hi, -math.inf)


@dataclass(frozen=True, slots=True)
class SpendCapController:
    """Spend cap per period, as a threshold adapter.

    budget_usd:        what the proprietary backends may cost per period.
    base_threshold:    the policy's threshold when spend is on track.
    max_threshold:     the strictest threshold the controller will use (default 1.0: at
                       the cap only requests scoring above it, i.e. none, escalate).
    gain:              how hard the threshold reacts to overspend (see ``threshold``).

    ``threshold(spent_usd, elapsed_fraction)`` returns the threshold to use now. With
    projected spend P = spent / elapsed (the period's pace extrapolated) and ratio
    r = P / budget:
      * r <= 1 (on or under budget): ``base_threshold``;
      * 1 < r: the threshold moves from base toward ``max_threshold`` by the fraction
        1 - exp(-gain * (r - 1)), so escalation is throttled smoothly and the requests that
        still escalate are the highest-scored ones;
      * spent >= budget: ``max_threshold`` (the budget is gone for this period).
    Early in a period (elapsed < min_elapsed) the pace is too noisy to extrapolate, so only
    the hard cap applies.
    """

    budget_usd: float
    base_threshold: float
    max_threshold: float = 1.0
    gain: float = 2.0
    min_elapsed: float = 0.02

    def __post_init__(self) -> None:
        if not self.budget_usd > 0:
            raise ValueError(f"budget_usd must be > 0, got {self.budget_usd}")
        if not 0.0 <= self.base_threshold <= self.max_threshold <= 1.0:
            raise ValueError("need 0 <= base_threshold <= max_threshold <= 1")
        if not self.gain > 0:
            raise ValueError(f"gain must be > 0, got {self.gain}")

    def threshold(self, spent_usd: float, elapsed_fraction: float) -> float:
        if spent_usd < 0 or not 0.0 <= elapsed_fraction <= 1.0:
            raise ValueError("spent_usd must be >= 0 and elapsed_fraction in [0, 1]")
        if spent_usd >= self.budget_usd:
            return self.max_threshold
        if elapsed_fraction < self.min_elapsed:
            return self.base_threshold
        ratio = (spent_usd / elapsed_fraction) / self.budget_usd
        if ratio <= 1.0:
            return self.base_threshold
        pull = 1.0 - math.exp(-self.gain * (ratio - 1.0))
        return self.base_threshold + pull * (self.max_threshold - self.base_threshold)
