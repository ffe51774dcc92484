"""Rate limits, team budgets and the spend cap, over the shared state (Redis across replicas).

Nothing here touches the shared state unless the policy asks for a limit, so a gateway
without limits pays nothing for them. State failures fail open (``SharedState`` counts them).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from gateway.auth import Caller
from gateway.errors import RateLimitError
from gateway.router.calibration import SpendCapController
from gateway.runtime import Runtime
from gateway.state.periods import period_bounds

RPM_WINDOW_S = 60
PERIOD_SECONDS = {
    "minute": 60,
    "hour": 3600,
    "day": 86400,
}  # fixed-length periods; months are calendar months


class Limits:
    def __init__(self, state, metrics) -> None:
        self.state = state  # gateway.state.SharedState
        self.metrics = metrics
        # virtual model -> proprietary spend in the current cap period, as last seen
        self._cap_spend: dict[str, float] = {}

    async def check(self, rt: Runtime, caller: Caller) -> bool:
        """Raise RateLimitError past a limit; return True when the team is over its budget
        and its policy is to stay on self-hosted backends."""
        rpm = rt.keys.rpm_by_key.get(caller.key_name) if caller.key_name else None
        if rpm:
            await self._rate(f"key:{caller.key_name}", rpm, "API key")
        team = rt.policy.teams.get(caller.team)
        if team is None:
            return False
        if team.rpm:
            await self._rate(f"team:{caller.team}", team.rpm, "team")
        if team.budget_usd is not None:
            spent = await self.state.get_spend(f"team:{caller.team}", team.budget_period)
            if spent >= team.budget_usd:
                if team.on_budget_exhausted == "reject":
                    self.metrics.record_rate_limited("budget")
                    raise RateLimitError(
                        f"team {caller.team!r} has spent its budget of ${team.budget_usd:g} per {team.budget_period}",
                        code="budget_exceeded",
                    )
                return True
        return False

    async def _rate(self, scope: str, limit: int, what: str) -> None:
        res = await self.state.hit_rate_limit(scope, limit, RPM_WINDOW_S)
        if not res.allowed:
            self.metrics.record_rate_limited("rpm")
            raise RateLimitError(
                f"{what} rate limit of {limit} requests per minute reached",
                retry_after=res.retry_after_s,
            )

    async def record_spend(
        self, rt: Runtime, team: str, vmodel: str, usd: float, self_hosted: bool
    ) -> None:
        t = rt.policy.teams.get(team)
        if t is not None and t.budget_usd is not None:
            await self.state.incr_spend(f"team:{team}", usd, t.budget_period)
        m = rt.policy.models.get(vmodel)
        if m is not None and m.difficulty.spend_cap_usd is not None and not self_hosted:
            self._cap_spend[vmodel] = await self.state.incr_spend(
                f"model:{vmodel}:proprietary", usd, m.difficulty.spend_cap_period
            )

    def threshold(self, rt: Runtime, vmodel: str, base: float) -> float:
        """The "hard" threshold now: the base one, raised while proprietary spend runs ahead
        of the model's spend cap (so the hardest requests still escalate first)."""
        cfg = rt.policy.models[vmodel].difficulty
        if cfg.spend_cap_usd is None:
            return base
        ctl = SpendCapController(budget_usd=cfg.spend_cap_usd, base_threshold=base)
        spent = self._cap_spend.get(vmodel, 0.0)
        return ctl.threshold(
            spent_usd=spent, elapsed_fraction=elapsed_fraction(cfg.spend_cap_period, time.time())
        )


def elapsed_fraction(period: str, now: float) -> float:
    """How far into the current UTC calendar period ``now`` is, in [0, 1)."""
    _, end = period_bounds(period, now)
    t = datetime.fromtimestamp(now, UTC)
    if period == "month":
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
    else:
        start = end - PERIOD_SECONDS[period]
    return min(1.0, max(0.0, (now - start) / (end - start)))
