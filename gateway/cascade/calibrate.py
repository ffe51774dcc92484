"""The cascade threshold that best separates judged losses from wins (shadow records).

A record whose confidence is below the threshold would be escalated. Among the midpoints
between observed confidences, the threshold maximising Youden's J (share of losses caught
minus share of wins and ties escalated) is chosen; ties in J go to the lower threshold
(fewer escalations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.shadow.records import ShadowRecord

__all__ = ["Calibration", "calibrate_threshold"]


@dataclass(frozen=True, slots=True)
class Calibration:
    threshold: float
    n: int
    losses: int
    losses_caught: int  # losses with confidence below the threshold
    others_escalated: int  # wins and ties below it
    escalated_share: float

    @property
    def j(self) -> float:
        others = self.n - self.losses
        tpr = self.losses_caught / self.losses if self.losses else 0.0
        fpr = self.others_escalated / others if others else 0.0
        return tpr - fpr


def calibrate_threshold(records: Sequence[ShadowRecord]) -> Calibration:
    usable = [
        (r.confidence, r.outcome == "loss")
        for r in records
        if r.confidence is not None and r.outcome is not None
    ]
    if not usable:
        raise ValueError(
            "no judged record carries a confidence: enable cascade (observe_only: true) on the"
            " rules to calibrate, and collect shadow records"
        )
    losses = sum(1 for _, loss in usable if loss)
    if losses in (0, len(usable)):
        raise ValueError(
            f"need both losses and wins/ties to separate; got {losses} losses of {len(usable)}"
        )
    values = sorted({c for c, _ in usable})
    cands = [values[0] - 1e-9] + [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)]
    cands.append(values[-1] + 1e-9)
    best = None
    for t in cands:
        caught = sum(1 for c, loss in usable if loss and c < t)
        others = sum(1 for c, loss in usable if not loss and c < t)
        cal = Calibration(t, len(usable), losses, caught, others, (caught + others) / len(usable))
        if best is None or cal.j > best.j + 1e-12:
            best = cal
    assert best is not None  # cands is never empty
    return best
