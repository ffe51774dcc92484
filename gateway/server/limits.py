"""Rate limits, team budgets and the spend cap, over the shared state (Redis across replicas).

Nothing here touches the shared state unless the policy asks for a limit, so a gateway
without limits pays nothing for them. State failures fail open (``SharedState`` counts them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.auth import Caller
from gateway.config.schema import ApiKey, TeamConfig
from gateway.errors import RateLimitError
from gateway.routing.calibration import SpendCapController
from gateway.runtime import Runtime
from gateway.state.periods import period_bounds

RPM_WINDOW_S = 60  # requests and tokens per minute: one sliding minute
# What a request without max_tokens is assumed to generate when its tokens are reserved
DEFAULT_COMPLETION_ESTIMATE = 256
PERIOD_SECONDS = {
    "minute": 60,
    "hour": 3600,
    "day": 86400,
}  # fixed-length periods; months are calendar months


@dataclass(slots=True)
class Admission:
    """What the limits decided for one request, and what it reserved (to settle afterwards)."""

    self_hosted_only: bool = False  # over a budget whose policy keeps it on self-hosted backends
    reserved: list[tuple[str, int, int, int]] = field(
        default_factory=list
    )  # (scope, window_s, window, tokens) of TPM reservations


NO_LIMITS = Admission()


class Limits:
    def __init__(self, state, metrics) -> None:
        self.state = state  # gateway.state.SharedState
        self.metrics = metrics
        # virtual model -> proprietary spend in the current cap period, as last seen
        self._cap_spend: dict[str, float] = {}

    async def check(self, rt: Runtime, caller: Caller, est_tokens: int = 0) -> Admission:
        """Raise RateLimitError past a limit (RPM, TPM, a reject-on-exhaustion budget), else
        admit: TPM limits reserve ``est_tokens`` now, reconciled by ``settle``."""
        key = rt.policy_keys.get(caller.key_name) if caller.key_name else None
        team = rt.policy.teams.get(caller.team)
        if key is None and team is None:
            return NO_LIMITS
        adm = Admission()
        try:
            if key is not None and key.rpm:
                await self._rate(f"key:{caller.key_name}", key.rpm, "API key")
            if team is not None and team.rpm:
                await self._rate(f"team:{caller.team}", team.rpm, "team")
            if key is not None and key.tpm:
                await self._tokens(adm, f"key:{caller.key_name}", key.tpm, est_tokens, "API key")
            if team is not None and team.tpm:
                await self._tokens(adm, f"team:{caller.team}", team.tpm, est_tokens, "team")
            if key is not None and key.budget_usd is not None:
                adm.self_hosted_only |= await self._budget(
                    f"key:{caller.key_name}", key, f"API key {caller.key_name!r}"
                )
            if team is not None and team.budget_usd is not None:
                adm.self_hosted_only |= await self._budget(
                    f"team:{caller.team}", team, f"team {caller.team!r}"
                )
        except RateLimitError:
            await self._release(adm)
            raise
        return adm

    async def over_budget(self, rt: Runtime, caller: Caller) -> bool:
        """Any of the caller's budgets spent (read only: nothing counted, nothing reserved)."""
        key = rt.policy_keys.get(caller.key_name) if caller.key_name else None
        team = rt.policy.teams.get(caller.team)
        scopes = [(f"key:{caller.key_name}", key), (f"team:{caller.team}", team)]
        for scope, cfg in scopes:
            if cfg is not None and cfg.budget_usd is not None:
                if await self.state.get_spend(scope, cfg.budget_period) >= cfg.budget_usd:
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

    async def _tokens(self, adm: Admission, scope: str, limit: int, est: int, what: str) -> None:
        # a request larger than the whole limit may still run alone in an empty window
        cost = max(1, min(est, limit))
        res = await self.state.hit_rate_limit(scope, limit, RPM_WINDOW_S, cost)
        if not res.allowed:
            self.metrics.record_rate_limited("tpm")
            raise RateLimitError(
                f"{what} token rate limit of {limit} tokens per minute reached",
                code="tokens_per_minute_exceeded",
                retry_after=res.retry_after_s,
            )
        adm.reserved.append((scope, RPM_WINDOW_S, res.window, cost))

    async def _budget(self, scope: str, cfg: TeamConfig | ApiKey, what: str) -> bool:
        budget = cfg.budget_usd or 0.0
        spent = await self.state.get_spend(scope, cfg.budget_period)
        self.metrics.set_budget_remaining(scope, budget - spent)
        if spent < budget:
            return False
        if cfg.on_budget_exhausted == "reject":
            self.metrics.record_rate_limited("budget")
            raise RateLimitError(
                f"{what} has spent its budget of ${cfg.budget_usd:g} per {cfg.budget_period}",
                code="budget_exceeded",
            )
        return True

    async def _release(self, adm: Admission) -> None:
        for scope, window_s, window, tokens in adm.reserved:
            await self.state.adjust_window(scope, window_s, window, -tokens)
        adm.reserved.clear()

    async def settle(
        self,
        rt: Runtime,
        caller: Caller,
        adm: Admission,
        used_tokens: int,
        vmodel: str,
        usd: float,
        self_hosted: bool,
    ) -> None:
        """After the request: reconcile TPM reservations with the tokens really used (a cut
        stream counts what it produced) and charge the spend to the key, team and spend cap."""
        for scope, window_s, window, tokens in adm.reserved:
            if used_tokens != tokens:
                await self.state.adjust_window(scope, window_s, window, used_tokens - tokens)
        if usd <= 0:
            return
        key = rt.policy_keys.get(caller.key_name) if caller.key_name else None
        if key is not None and key.budget_usd is not None:
            total = await self.state.incr_spend(f"key:{caller.key_name}", usd, key.budget_period)
            self.metrics.set_budget_remaining(f"key:{caller.key_name}", key.budget_usd - total)
        await self.record_spend(rt, caller.team, vmodel, usd, self_hosted)

    async def record_spend(
        self, rt: Runtime, team: str, vmodel: str, usd: float, self_hosted: bool
    ) -> None:
        t = rt.policy.teams.get(team)
        if t is not None and t.budget_usd is not None:
            total = await self.state.incr_spend(f"team:{team}", usd, t.budget_period)
            self.metrics.set_budget_remaining(f"team:{team}", t.budget_usd - total)
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
