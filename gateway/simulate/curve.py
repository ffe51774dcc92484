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

from gateway.simulate.replay import Routed

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


def _usable(r: Routed) -> bool:
    if r.req.label is None or r.chosen is None:
        return False
    return r.score is None or (r.hard is not None and r.soft is not None)


def cost_quality_curve(routed: Sequence[Routed]) -> Curve | None:
    rows = [r for r in routed if _usable(r)]
    if not rows:
        return None
    n = len(rows)
    weak = np.array([r.req.label.weak for r in rows])
    strong = np.array([r.req.label.strong for r in rows])
    baseline = float(sum(r.baseline_cost for r in rows))
    # A request without a score goes to the same side at every threshold.
    score = np.array([r.score if r.score is not None else np.nan for r in rows])
    hard = [r.hard or r.chosen for r in rows]
    soft = [r.soft or r.chosen for r in rows]
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
        cheapest_at_target=min(reach, key=lambda p: (p.cost_usd, -p.threshold)) if reach else None,
    )
