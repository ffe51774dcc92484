"""Prometheus series of shadow evaluation.

Registered on the gateway's own registry (``GatewayMetrics.shadow``). Labels
are bounded by the policy: virtual model, rule, backend, a difficulty decile ("0".."9", or
"none" when no rule asked for a score), an outcome (win/tie/loss) and fixed reason words.

"Quality kept local" = (wins + ties) / judged samples of self-hosted answers; Prometheus
computes it per rule and per decile from ``gateway_shadow_judgements_total``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.metric_series import PREFIX, Children, Series

__all__ = ["ShadowMetrics", "difficulty_decile"]

DROP_REASONS = ("queue_full", "cap", "residency", "shutdown")
FAILURE_STAGES = ("reference", "judge", "parse", "store", "timeout")


def difficulty_decile(score: float | None) -> str:
    if score is None:
        return "none"
    return str(min(9, max(0, int(score * 10))))


class ShadowMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        s = Series(registry, PREFIX + "shadow_")
        self.samples = s.counter(
            "samples_total",
            "Self-hosted answers sampled for shadow evaluation (queued).",
            ["virtual_model", "rule"],
        )
        self.dropped = s.counter(
            "dropped_total",
            "Samples not evaluated: queue full, daily cap reached, residency, shutdown.",
            ["reason"],
        )
        self.failures = s.counter(
            "failures_total",
            "Shadow samples that failed at a stage (reference, judge, parse, store, timeout).",
            ["stage"],
        )
        self.spend = s.counter(
            "spend_usd_total",
            "What the shadow calls (reference and judge) cost, in USD.",
            ["backend"],
        )
        self.judgements = s.counter(
            "judgements_total",
            "Judged self-hosted answers against the reference: win, tie or loss.",
            ["virtual_model", "rule", "difficulty_decile", "outcome"],
        )
        self.local_score = s.histogram(
            "local_score",
            "Single-mode judge grade (1-10) of self-hosted answers.",
            ["virtual_model", "rule"],
            buckets=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
        )
        self.quality_threshold = s.gauge(
            "quality_threshold",
            "The policy's min_quality_kept per virtual model (the alert's threshold).",
            ["virtual_model"],
            mode="livemax",
        )
        self.queue_depth = s.gauge(
            "queue_depth", "Samples waiting in the shadow queue.", mode="livesum"
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
