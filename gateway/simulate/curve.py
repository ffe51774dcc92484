"""The cost-quality curve over "hard" thresholds, on the requests whose log carries a label.

Quality is the mean answer quality over those requests: the strong (proprietary) side scores
``label.strong``, the self-hosted side ``label.weak`` (with ``strong_needed`` labels: the
strong side is always good, the weak side good unless the strong one was needed). Lowering
the threshold escalates more requests; each point says what that costs and what it buys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gateway.simulate.log import Label
from gateway.simulate.replay import Routed, Side

__all__ = ["CurvePoint", "Curve", "cost_quality_curve", "THRESHOLDS", "QUALITY_TARGET"]

THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 4)
QUALITY_TARGET = 0.95  # "reach 95% of the all-proprietary quality"


@dataclass(slots=True, frozen=True)
class CurvePoint:
    threshold: float | None  # None: the policy as configured (thresholds may vary, e.g. spend cap)
    escalated_share: float  # share of the labelled requests sent to a proprietary backend
    cost_usd: float
    cost_share: float  # of the all-proprietary baseline cost of the same requests
    quality: float  # mean answer quality in [0, 1]
    quality_share: float  # of the all-strong quality


@dataclass(slots=True, frozen=True)
class Curve:
    requests: int  # labelled and routable
    points: tuple[CurvePoint, ...]  # by threshold, ascending
    operating: CurvePoint
    weak_quality: float  # every labelled request answered by the self-hosted side
    strong_quality: float  # ... by the strong side
    cheapest_at_target: CurvePoint | None  # lowest cost reaching QUALITY_TARGET of strong quality

    def gain_over_random(self) -> float:
        """Mean quality share above the random-routing line (the straight line from the
        least- to the most-escalating threshold) over the sweep: < 0 when the scorer ranks
        these requests worse than chance."""
        lo, hi = self.points[-1], self.points[0]
        span = hi.cost_share - lo.cost_share
        if span <= 0:
            return 0.0
        gaps = [
            p.quality_share
            - (
                lo.quality_share
                + (hi.quality_share - lo.quality_share) * (p.cost_share - lo.cost_share) / span
            )
            for p in self.points
        ]
        return sum(gaps) / len(gaps)


@dataclass(slots=True, frozen=True)
class _Row:
    """A labelled, routable request: its label, and where it goes if hard / if not."""

    routed: Routed
    label: Label
    hard: Side
    soft: Side


def _usable(r: Routed) -> _Row | None:
    label, chosen = r.req.label, r.chosen
    if label is None or chosen is None:
        return None
    if r.score is not None and (r.hard is None or r.soft is None):
        return None
    # A request without a score goes to the same side at every threshold.
    return _Row(r, label, r.hard or chosen, r.soft or chosen)


def _cheapest_first(p: CurvePoint) -> tuple[float, float]:
    """Lowest cost first; at equal cost the highest threshold (fewest escalations)."""
    return p.cost_usd, -(p.threshold if p.threshold is not None else 0.0)


def cost_quality_curve(routed: Sequence[Routed]) -> Curve | None:
    usable = [u for u in map(_usable, routed) if u is not None]
    if not usable:
        return None
    rows = [u.routed for u in usable]
    n = len(rows)
    weak = np.array([u.label.weak for u in usable])
    strong = np.array([u.label.strong for u in usable])
    baseline = float(sum(r.baseline_cost for r in rows))
    score = np.array([r.score if r.score is not None else np.nan for r in rows])
    hard = [u.hard for u in usable]
    soft = [u.soft for u in usable]
    h_cost, s_cost = np.array([s.cost for s in hard]), np.array([s.cost for s in soft])
    h_prop = np.array([not s.self_hosted for s in hard])
    s_prop = np.array([not s.self_hosted for s in soft])
    strong_q = float(strong.mean())

    def point(t: float | None, use_hard: np.ndarray) -> CurvePoint:
        prop = np.where(use_hard, h_prop, s_prop)
        cost = float(np.where(use_hard, h_cost, s_cost).sum())
        q = float(np.where(prop, strong, weak).mean())
        return CurvePoint(
            threshold=t,
            escalated_share=float(prop.mean()),
            cost_usd=cost,
            cost_share=cost / baseline if baseline > 0 else 0.0,
            quality=q,
            quality_share=q / strong_q if strong_q > 0 else 1.0,
        )

    scored = ~np.isnan(score)
    points = tuple(
        point(float(t), scored & (np.nan_to_num(score, nan=-1.0) >= t)) for t in THRESHOLDS
    )
    chosen_hard = np.array([r.score is not None and r.chosen == r.hard for r in rows])
    operating = point(None, chosen_hard)
    reach = [p for p in points if p.quality_share >= QUALITY_TARGET]
    return Curve(
        requests=n,
        points=points,
        operating=operating,
        weak_quality=float(weak.mean()),
        strong_quality=strong_q,
        cheapest_at_target=min(reach, key=_cheapest_first) if reach else None,
    )
