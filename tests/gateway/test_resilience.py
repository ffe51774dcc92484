"""Circuit breaker transitions, backoff arithmetic and the retry loop, all on a fake clock."""

from __future__ import annotations

import random

import pytest

from gateway.backends.resilience import (
    CircuitBreaker,
    backoff_delay,
    call_with_retries,
    counts_as_failure,
)
from gateway.config.schema import CircuitBreakerConfig, RetryConfig
from gateway.errors import (
    InvalidRequestError,
    UpstreamConnectTimeoutError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def breaker(threshold: int = 3, cooldown: float = 10.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=threshold, cooldown_s=cooldown), clock=clock
    ), clock


# ---------------------------------------------------------------- circuit breaker


def test_opens_after_n_consecutive_failures_only():
    b, _ = breaker(threshold=3)
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the run
    b.record_failure()
    b.record_failure()
    assert b.state == "closed" and b.allow()
    b.record_failure()
    assert b.state == "open" and b.value == 2
    assert not b.allow()


def test_half_open_lets_exactly_one_probe_through_after_cooldown():
    b, clock = breaker(threshold=1, cooldown=10)
    b.record_failure()
    clock.t += 9.99
    assert b.state == "open" and not b.allow()
    clock.t += 0.01
    assert b.state == "half_open" and b.value == 1
    assert b.allow()  # the probe
    assert not b.allow() and not b.allow()  # nobody else while it is out
    assert b.state == "half_open"


def test_probe_success_closes():
    b, clock = breaker(threshold=2, cooldown=5)
    b.record_failure()
    b.record_failure()
    clock.t += 5
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.value == 0 and b.consecutive_failures == 0
    assert b.allow() and b.allow()


def test_probe_failure_reopens_for_a_full_cooldown():
    b, clock = breaker(threshold=2, cooldown=5)
    b.record_failure()
    b.record_failure()
    clock.t += 5
    assert b.allow()
    b.record_failure()  # a single failure in half-open reopens
    assert b.state == "open" and not b.allow()
    clock.t += 4.9
    assert not b.allow()
    clock.t += 0.1
    assert b.allow()


def test_a_lost_probe_does_not_wedge_the_breaker():
    b, clock = breaker(threshold=1, cooldown=5)
    b.record_failure()
    clock.t += 5
    assert b.allow()  # probe goes out and its caller never reports back
    clock.t += 4
    assert not b.allow()
    clock.t += 1
    assert b.allow()  # another probe after a further cooldown


# ---------------------------------------------------------------- backoff


def cfg(**kw) -> RetryConfig:
    base = {
        "max_attempts": 4,
        "backoff_base_s": 0.1,
        "backoff_max_s": 1.0,
        "max_retry_after_s": 5.0,
    }
    return RetryConfig(**(base | kw))


class MaxRng(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_is_exponential_capped_and_fully_jittered():
    c = cfg()
    top = MaxRng()
    assert [backoff_delay(a, c, rng=top) for a in range(6)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )
    rng = random.Random(7)
    draws = [backoff_delay(3, c, rng=rng) for _ in range(500)]
    assert all(0.0 <= d <= 0.8 for d in draws)
    assert min(draws) < 0.1 and max(draws) > 0.7  # full jitter spreads over [0, cap]


def test_retry_after_is_a_floor_and_too_long_means_fall_back():
    c = cfg()
    assert backoff_delay(0, c, retry_after=3.0, rng=random.Random(1)) == 3.0
    assert backoff_delay(0, c, retry_after=5.0, rng=random.Random(1)) == 5.0
    assert backoff_delay(0, c, retry_after=5.01) is None
    assert backoff_delay(4, c, retry_after=0.0, rng=MaxRng()) == 1.0


def test_zero_base_means_no_wait():
    assert backoff_delay(3, cfg(backoff_base_s=0.0)) == 0.0


# ---------------------------------------------------------------- call_with_retries


class Script:
    """An async callable that raises the scripted errors, then returns 'ok'."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, s: float) -> None:
        self.waits.append(s)


def e503() -> UpstreamError:
    return UpstreamUnavailableError("down", upstream_status=503)


async def test_retries_retryable_errors_then_succeeds():
    fn, sleeps, seen = Script(e503(), UpstreamConnectTimeoutError("no connect")), Sleeps(), []
    b, _ = breaker(threshold=5)
    out = await call_with_retries(
        fn,
        cfg(),
        b,
        on_retry=lambda a, e: seen.append((a, type(e).__name__)),
        sleep=sleeps,
        rng=MaxRng(),
    )
    assert out == "ok" and fn.calls == 3
    assert sleeps.waits == pytest.approx([0.1, 0.2])
    assert seen == [(1, "UpstreamUnavailableError"), (2, "UpstreamConnectTimeoutError")]
    assert b.state == "closed" and b.consecutive_failures == 0


async def test_a_read_timeout_is_not_retried_on_the_same_backend():
    """It was sent, and may still be running there; an upstream's own 504 is retried."""
    fn, sleeps = Script(UpstreamTimeoutError("slow")), Sleeps()
    b, _ = breaker(threshold=5)
    with pytest.raises(UpstreamTimeoutError):
        await call_with_retries(fn, cfg(), b, sleep=sleeps)
    assert fn.calls == 1 and b.consecutive_failures == 1
    fn = Script(UpstreamTimeoutError("gateway timeout", upstream_status=504))
    assert await call_with_retries(fn, cfg(max_attempts=2), b, sleep=sleeps) == "ok"
    assert fn.calls == 2


async def test_gives_up_after_max_attempts_with_the_last_error():
    errors = [UpstreamError(f"e{i}", upstream_status=500) for i in range(5)]
    fn, sleeps = Script(*errors), Sleeps()
    b, _ = breaker(threshold=10)
    with pytest.raises(UpstreamError, match="e2"):
        await call_with_retries(fn, cfg(max_attempts=3), b, sleep=sleeps)
    assert fn.calls == 3 and len(sleeps.waits) == 2 and b.consecutive_failures == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
async def test_client_and_config_errors_are_not_retried(status):
    fn, sleeps = Script(UpstreamError("no", upstream_status=status)), Sleeps()
    b, _ = breaker(threshold=1)
    with pytest.raises(UpstreamError):
        await call_with_retries(fn, cfg(), b, sleep=sleeps)
    assert fn.calls == 1 and sleeps.waits == []
    # the request's own fault leaves the breaker alone; the gateway's credentials/config do not
    assert b.state == ("closed" if status in (400, 413, 422) else "open")


async def test_honours_retry_after_and_falls_back_when_too_long():
    fn, sleeps = Script(UpstreamError("busy", upstream_status=429, retry_after=2.0)), Sleeps()
    b, _ = breaker()
    assert await call_with_retries(fn, cfg(), b, sleep=sleeps, rng=random.Random(0)) == "ok"
    assert sleeps.waits == [2.0]

    fn, sleeps = Script(UpstreamError("busy", upstream_status=429, retry_after=60.0)), Sleeps()
    with pytest.raises(UpstreamError, match="busy"):
        await call_with_retries(fn, cfg(), b, sleep=sleeps)
    assert fn.calls == 1 and sleeps.waits == []


async def test_stops_retrying_once_the_breaker_opens():
    fn, sleeps = Script(*[e503() for _ in range(5)]), Sleeps()
    b, _ = breaker(threshold=2)
    with pytest.raises(UpstreamUnavailableError):
        await call_with_retries(fn, cfg(max_attempts=5), b, sleep=sleeps)
    assert fn.calls == 2 and b.state == "open"


async def test_non_upstream_errors_propagate_untouched():
    fn = Script(InvalidRequestError("bad"))
    b, _ = breaker(threshold=1)
    with pytest.raises(InvalidRequestError):
        await call_with_retries(fn, cfg(), b, sleep=Sleeps())
    assert fn.calls == 1 and b.state == "closed"


def test_counts_as_failure():
    assert counts_as_failure(UpstreamError("x", upstream_status=500))
    assert counts_as_failure(UpstreamUnavailableError("x"))
    assert not counts_as_failure(UpstreamError("x", upstream_status=400))
