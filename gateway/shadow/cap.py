"""The daily USD cap on shadow spend, shared by every replica through ``SharedState``.

A sample reserves its estimated cost before any call (one atomic INCRBYFLOAT on Redis); if
the day's total would pass the cap the reservation is taken back and the sample is skipped.
After the calls the estimate is replaced by the real cost. Reserving first means two
replicas can never both spend the last dollar. During a Redis outage the shared state
answers from each replica's own tally, so each replica still stops at the cap on its own.
"""

from __future__ import annotations

from gateway.state.base import SharedState

__all__ = ["SCOPE", "ShadowCap"]

SCOPE = "shadow"
PERIOD = "day"


class ShadowCap:
    def __init__(self, state: SharedState, cap_usd: float) -> None:
        self.state = state
        self.cap_usd = cap_usd

    async def reserve(self, estimate_usd: float) -> bool:
        """Whether a sample estimated at ``estimate_usd`` fits under today's cap (reserved if so)."""
        if self.cap_usd <= 0:
            return False
        total = await self.state.incr_spend(SCOPE, estimate_usd, PERIOD)
        if total > self.cap_usd + 1e-12:
            await self.state.incr_spend(SCOPE, -estimate_usd, PERIOD)
            return False
        return True

    async def settle(self, estimate_usd: float, actual_usd: float) -> None:
        """Replace a reservation by what the sample really cost."""
        if actual_usd != estimate_usd:
            await self.state.incr_spend(SCOPE, actual_usd - estimate_usd, PERIOD)

    async def spent_today(self) -> float:
        return await self.state.get_spend(SCOPE, PERIOD)
