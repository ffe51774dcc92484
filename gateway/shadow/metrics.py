"""Prometheus series of shadow evaluation.

Registered on the gateway's own registry (``GatewayMetrics.shadow``). Labels
are bounded by the policy: virtual model, rule, backend, a difficulty decile ("0".."9", or
"none" when no rule asked for a score), an outcome (win/tie/loss) and fixed reason words.

"Quality kept local" = (wins + ties) / judged samples of self-hosted answers; Prometheus
computes it per rule and per decile from ``gateway_shadow_judgements_total``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ShadowMetrics", "difficulty_decile"]

PREFIX = "gateway_"
DROP_REASONS = ("queue_full", "cap", "residency", "shutdown")
FAILURE_STAGES = ("reference", "judge", "parse", "store", "timeout")


def difficulty_decile(score: float | None) -> str:
    if score is None:
        return "none"
    return str(min(9, max(0, int(score * 10))))


class Children:
    """Label children looked up once (a dict hit per observation after the first)."""

    def __init__(self) -> None:
        self._c: dict[tuple[Any, ...], Any] = {}

    def get(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._c.get(key)
        if child is None:
            child = self._c[key] = metric.labels(*labels)
        return child


class ShadowMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r, p = registry, PREFIX + "shadow_"
        self.samples = Counter(
            p + "samples_total",
            "Self-hosted answers sampled for shadow evaluation (queued).",
            ["virtual_model", "rule"],
            registry=r,
        )
        self.dropped = Counter(
            p + "dropped_total",
            "Samples not evaluated: queue full, daily cap reached, residency, shutdown.",
            ["reason"],
            registry=r,
        )
        self.failures = Counter(
            p + "failures_total",
            "Shadow samples that failed at a stage (reference, judge, parse, store, timeout).",
            ["stage"],
            registry=r,
        )
        self.spend = Counter(
            p + "spend_usd_total",
            "What the shadow calls (reference and judge) cost, in USD.",
            ["backend"],
            registry=r,
        )
        self.judgements = Counter(
            p + "judgements_total",
            "Judged self-hosted answers against the reference: win, tie or loss.",
            ["virtual_model", "rule", "difficulty_decile", "outcome"],
            registry=r,
        )
        self.local_score = Histogram(
            p + "local_score",
            "Single-mode judge grade (1-10) of self-hosted answers.",
            ["virtual_model", "rule"],
            buckets=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
            registry=r,
        )
        self.quality_threshold = Gauge(
            p + "quality_threshold",
            "The policy's min_quality_kept per virtual model (the alert's threshold).",
            ["virtual_model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.queue_depth = Gauge(
            p + "queue_depth",
            "Samples waiting in the shadow queue.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._ch = Children()
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        for stage in FAILURE_STAGES:
            self.failures.labels(stage)

    def record_sample(self, vmodel: str, rule: str) -> None:
        self._ch.get(self.samples, vmodel, rule).inc()

    def record_drop(self, reason: str) -> None:
        self._ch.get(self.dropped, reason).inc()

    def record_failure(self, stage: str) -> None:
        self._ch.get(self.failures, stage).inc()

    def record_spend(self, backend: str, usd: float) -> None:
        if usd > 0:
            self._ch.get(self.spend, backend).inc(usd)

    def record_judgement(
        self, vmodel: str, rule: str, difficulty: float | None, outcome: str
    ) -> None:
        self._ch.get(self.judgements, vmodel, rule, difficulty_decile(difficulty), outcome).inc()

    def record_local_score(self, vmodel: str, rule: str, score: float) -> None:
        self._ch.get(self.local_score, vmodel, rule).observe(score)

    def set_thresholds(self, thresholds: dict[str, float]) -> None:
        for vmodel, value in thresholds.items():
            self.quality_threshold.labels(vmodel).set(value)
