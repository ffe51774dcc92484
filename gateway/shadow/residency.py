"""Which backends a shadow sample may reach: a pure function, checked before any shadow call.

A sample re-sends the client's data to a reference backend and shows it to a judge, so both
are held to the same data rules as the request itself: a request that had to stay on
self-hosted backends (a ``self_hosted_only`` rule, a team kept home over its budget) only
ever meets self-hosted ones (``home_reference`` / ``home_judge``); a backend that a
provenance rule refuses for the request (team, key or data rule: ``Decision.allowed``) is
never called; and a backend the request could not have been routed to (capabilities,
disabled) is never its reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config.shadow import ShadowSampling
from gateway.routing.decide import BackendView, Decision, backend_refusal
from gateway.routing.features import RequestFeatures

__all__ = ["ShadowTargets", "shadow_targets"]


@dataclass(frozen=True, slots=True)
class ShadowTargets:
    reference: str | None  # None: grade the local answer alone
    judge: str | None  # None: nothing may judge this request (skip it)
    home: bool  # the request had to stay on self-hosted backends


def _may_see(
    name: str | None,
    views: Mapping[str, BackendView],
    home: bool,
    allowed: frozenset[str] | None,
) -> bool:
    if name is None or (allowed is not None and name not in allowed):
        return False
    view = views.get(name)
    return view is not None and view.enabled and (view.self_hosted or not home)


def shadow_targets(
    sampling: ShadowSampling,
    f: RequestFeatures,
    decision: Decision,
    views: Mapping[str, BackendView],
) -> ShadowTargets:
    """``decision.allowed`` is the provenance rules' verdict (gateway.routing.provenance) for
    this request; a judge it refuses means the request is treated as home data."""
    allowed = decision.allowed
    home = (
        decision.self_hosted_only
        or f.self_hosted_only
        or (allowed is not None and sampling.judge not in allowed)
    )
    if home:
        ref_name, judge_name = sampling.home_reference, sampling.home_judge
    else:
        ref_name, judge_name = sampling.reference, sampling.judge
    reference = None
    if ref_name is not None and _may_see(ref_name, views, home, allowed):
        if backend_refusal(f, views[ref_name], home) is None:
            reference = ref_name
    judge = judge_name if _may_see(judge_name, views, home, allowed) else None
    return ShadowTargets(reference, judge, home)
