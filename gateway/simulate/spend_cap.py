"""The spend cap over a replayed log: the threshold rises while proprietary spend runs ahead
of the model's budget, as ``gateway serve`` does it (same controller, same UTC calendar
periods), with the log's timestamps as the clock. Requests without a timestamp see the base
threshold (nothing to pace against)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.routing.calibration import SpendCapController
from gateway.server.limits import elapsed_fraction
from gateway.state.periods import period_bounds

if TYPE_CHECKING:
    from gateway.simulate.context import SimContext

__all__ = ["SpendCapReplay"]


@dataclass(slots=True)
class SpendCapReplay:
    budget_usd: float
    period: str  # hour | day | month (UTC calendar periods)
    spent: dict[str, float] = field(default_factory=dict)  # period label -> proprietary USD

    @classmethod
    def for_model(cls, ctx: SimContext, name: str) -> SpendCapReplay | None:
        cfg = ctx.loaded.policy.models[name].difficulty
        if cfg.spend_cap_usd is None:
            return None
        return cls(cfg.spend_cap_usd, cfg.spend_cap_period)

    def threshold(self, base: float, ts: float | None) -> float:
        if ts is None:
            return base
        label, _ = period_bounds(self.period, ts)
        ctl = SpendCapController(budget_usd=self.budget_usd, base_threshold=base)
        return ctl.threshold(
            spent_usd=self.spent.get(label, 0.0), elapsed_fraction=elapsed_fraction(self.period, ts)
        )

    def record(self, usd: float, ts: float | None) -> None:
        if ts is not None:
            label, _ = period_bounds(self.period, ts)
            self.spent[label] = self.spent.get(label, 0.0) + usd
