"""Adding up a replay: shares per backend and per rule, cost against the all-proprietary
baseline, and savings per month at the log's rate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.simulate.curve import Curve, cost_quality_curve
from gateway.simulate.replay import Routed, Side

__all__ = ["Group", "Rate", "Report", "summarize", "MONTH_S", "MIN_SPAN_S"]

MONTH_S = 30 * 86400
MIN_SPAN_S = 60.0  # timestamps spanning less than this give no usable rate
MAX_ERRORS_SHOWN = 5


@dataclass(slots=True)
class Group:
    """Requests that went to one backend (or matched one rule)."""

    name: str
    self_hosted: bool | None = None  # backends only
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    baseline_usd: float = 0.0
    request_share: float = 0.0
    token_share: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True, frozen=True)
class Rate:
    requests_per_day: float | None  # None: unknown (no timestamps and none assumed)
    source: str  # how it was found, in words
    span_s: float | None = None


@dataclass(slots=True)
class Report:
    policy: str
    log: str
    requests: int
    routed: int
    by_backend: list[Group]
    by_rule: list[Group]
    cost_usd: float
    baseline_usd: float
    proprietary_request_share: float
    proprietary_token_share: float
    tokens_from_log_share: float
    rate: Rate
    reference_model: str
    curve: Curve | None
    errors: list[tuple[int, str]] = field(
        default_factory=list
    )  # (line, why) of unroutable requests
    error_count: int = 0
    scorer_failures: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def savings_usd(self) -> float:
        return self.baseline_usd - self.cost_usd

    @property
    def savings_share(self) -> float:
        return self.savings_usd / self.baseline_usd if self.baseline_usd > 0 else 0.0

    def per_month(self, usd: float) -> float | None:
        """``usd`` spent over this log's routed requests, scaled to a month at the log's rate."""
        if self.rate.requests_per_day is None or self.routed == 0:
            return None
        return usd / self.routed * self.rate.requests_per_day * 30


def _rate(routed: Sequence[Routed], assumed_per_day: float | None) -> Rate:
    if assumed_per_day is not None:
        return Rate(
            assumed_per_day, f"assumed {assumed_per_day:,.0f} requests/day (--requests-per-day)"
        )
    ts = [r.req.timestamp for r in routed if r.req.timestamp is not None]
    if len(ts) < 2:
        return Rate(
            None,
            "no timestamps in the log: per-request numbers only (give --requests-per-day for monthly figures)",
        )
    span = max(ts) - min(ts)
    if span < MIN_SPAN_S:
        return Rate(
            None,
            f"timestamps span only {span:.0f} s: per-request numbers only (give --requests-per-day)",
        )
    # n timestamps mark n-1 gaps: (n-1)/span is the unbiased arrival rate.
    per_day = (len(ts) - 1) / span * 86400
    return Rate(
        per_day,
        f"{per_day:,.0f} requests/day, from the log's timestamps over {span / 3600:.1f} h",
        span,
    )


def _add(
    groups: dict[str, Group], key: str, r: Routed, side: Side, self_hosted: bool | None
) -> None:
    g = groups.get(key)
    if g is None:
        g = groups[key] = Group(key, self_hosted)
    g.requests += 1
    g.prompt_tokens += r.prompt_tokens
    g.completion_tokens += r.completion_tokens
    g.cost_usd += side.cost
    g.baseline_usd += r.baseline_cost


def _shares(groups: dict[str, Group], requests: int, tokens: int) -> list[Group]:
    out = sorted(groups.values(), key=lambda g: (-g.requests, g.name))
    for g in out:
        g.request_share = g.requests / requests if requests else 0.0
        g.token_share = g.tokens / tokens if tokens else 0.0
    return out


def summarize(
    routed: Sequence[Routed],
    *,
    policy: str,
    log: str,
    reference_model: str,
    scorer_failures: int = 0,
    requests_per_day: float | None = None,
    notes: Sequence[str] = (),
) -> Report:
    picked = [(r, r.chosen) for r in routed if r.chosen is not None]
    ok = [r for r, _ in picked]
    bad = [r for r in routed if r.chosen is None]
    models = {r.virtual_model for r in ok}
    backends: dict[str, Group] = {}
    rules: dict[str, Group] = {}
    for r, side in picked:
        _add(backends, side.backend, r, side, side.self_hosted)
        _add(
            rules,
            side.rule if len(models) == 1 else f"{r.virtual_model}/{side.rule}",
            r,
            side,
            None,
        )
    tokens = sum(r.prompt_tokens + r.completion_tokens for r in ok)
    prop = [r for r, side in picked if not side.self_hosted]
    return Report(
        policy=policy,
        log=log,
        requests=len(routed),
        routed=len(ok),
        by_backend=_shares(backends, len(ok), tokens),
        by_rule=_shares(rules, len(ok), tokens),
        cost_usd=sum(side.cost for _, side in picked),
        baseline_usd=sum(r.baseline_cost for r in ok),
        proprietary_request_share=len(prop) / len(ok) if ok else 0.0,
        proprietary_token_share=sum(r.prompt_tokens + r.completion_tokens for r in prop) / tokens
        if tokens
        else 0.0,
        tokens_from_log_share=sum(r.tokens_from_log for r in ok) / len(ok) if ok else 0.0,
        rate=_rate(ok, requests_per_day),
        reference_model=reference_model,
        curve=cost_quality_curve(ok),
        errors=[(r.req.line, r.error or "") for r in bad[:MAX_ERRORS_SHOWN]],
        error_count=len(bad),
        scorer_failures=scorer_failures,
        notes=list(notes),
    )
