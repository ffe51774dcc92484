"""Which requests are sampled: the effective ``shadow:`` settings per virtual model, and the
per-request draw (a dict lookup and one random number on the request path)."""

from __future__ import annotations

import random
from collections.abc import Callable

from gateway.config.schema import Policy
from gateway.config.shadow import ShadowSampling
from gateway.routing.decide import Decision
from gateway.routing.features import RequestFeatures

__all__ = ["effective_sampling", "selected"]


def effective_sampling(policy: Policy) -> dict[str, ShadowSampling]:
    """Virtual model -> its shadow settings (global ones overridden by the model's own), for
    the models that sample at all."""
    if policy.shadow is None:
        return {}
    base = policy.shadow.sampling()
    out: dict[str, ShadowSampling] = {}
    for name, model in policy.models.items():
        s = model.shadow.over(base) if model.shadow is not None else base
        if s.enabled and s.sample_rate > 0 and (s.judge or s.home_judge):
            out[name] = s
    return out


def selected(
    s: ShadowSampling,
    f: RequestFeatures,
    decision: Decision,
    rand: Callable[[], float] = random.random,
) -> bool:
    """Whether this request is sampled (before knowing which backend answers it)."""
    if f.operation != "chat":
        return False
    if s.teams is not None and f.team not in s.teams:
        return False
    if f.team in s.exclude_teams:
        return False
    if s.rules is not None and decision.reason not in s.rules:
        return False
    if decision.reason in s.exclude_rules:
        return False
    return s.sample_rate >= 1.0 or rand() < s.sample_rate
