"""Token reservations in the shared state: a hit of a given cost, and reconciling it afterwards
(in-process and real Redis behave the same)."""

from __future__ import annotations

import uuid

import pytest
from redis_harness import SHARED_URL

from gateway.state import MemoryState, RedisState


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["memory", "redis"])
def state(request):
    clock = Clock(6_000_000.0)  # the start of a minute window
    if request.param == "memory":
        s = MemoryState(clock=clock)
    else:
        s = RedisState(SHARED_URL, namespace=f"tpm-{uuid.uuid4().hex}", clock=clock)
    yield s, clock


async def test_reserve_refuse_and_reconcile(state):
    s, clock = state
    first = await s.hit_rate_limit("key:a", 1000, 60, cost=600)
    assert first.allowed and first.remaining == 400 and first.window >= 0
    refused = await s.hit_rate_limit("key:a", 1000, 60, cost=600)
    assert not refused.allowed and refused.retry_after_s > 0
    # the first request really used 150 tokens: 450 are given back, and the second now fits
    await s.adjust_window("key:a", 60, first.window, 150 - 600)
    again = await s.hit_rate_limit("key:a", 1000, 60, cost=600)
    assert again.allowed and again.remaining == 1000 - 150 - 600
    # a cut stream that produced more than reserved is charged the excess
    await s.adjust_window("key:a", 60, again.window, 100)
    assert not (await s.hit_rate_limit("key:a", 1000, 60, cost=200)).allowed
    await s.close()


async def test_adjusting_a_window_never_goes_below_zero(state):
    s, _ = state
    r = await s.hit_rate_limit("key:b", 100, 60, cost=10)
    await s.adjust_window("key:b", 60, r.window, -50)
    assert (await s.hit_rate_limit("key:b", 100, 60, cost=100)).allowed
    await s.close()


async def test_cost_must_be_positive(state):
    s, _ = state
    with pytest.raises(ValueError):
        await s.hit_rate_limit("key:c", 100, 60, cost=0)
    await s.close()
