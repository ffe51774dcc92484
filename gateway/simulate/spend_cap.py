"""The spend cap over a replayed log: the threshold rises while proprietary spend runs ahead
of the model's budget, exactly as ``gateway serve`` does it, with the log's timestamps as the
clock. Requests without a timestamp see the base threshold (nothing to pace against)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.simulate.context import SimContext

__all__ = ["SpendCapReplay", "PERIOD_SECONDS"]

PERIOD_SECONDS = {"hour": 3600, "day": 86400, "month": 30 * 86400}


@dataclass(slots=True)
class SpendCapReplay:
    budget_usd: float
    period_s: int
    spent: dict[int, float] = field(default_factory=dict)  # period index -> proprietary USD
    raised: int = 0  # requests that saw a threshold above the base one

    @classmethod
    def for_model(cls, ctx: SimContext, name: str) -> SpendCapReplay | None:
        cfg = ctx.loaded.policy.models[name].difficulty
        if cfg.spend_cap_usd is None:
            return None
        return cls(cfg.spend_cap_usd, PERIOD_SECONDS[cfg.spend_cap_period])

    def threshold(self, base: float, ts: float | None) -> float:
        if ts is None:
            return base
        period = int(ts // self.period_s)
        elapsed = (ts % self.period_s) / self.period_s
        from gateway.router.calibration import SpendCapController

        ctl = SpendCapController(budget_usd=self.budget_usd, base_threshold=base)
        t = ctl.threshold(spent_usd=self.spent.get(period, 0.0), elapsed_fraction=elapsed)
        if t > base:
            self.raised += 1
        return t

    def record(self, usd: float, ts: float | None) -> None:
        if ts is not None:
            period = int(ts // self.period_s)
            self.spent[period] = self.spent.get(period, 0.0) + usd
