"""Prometheus series of the confidence cascade (``GatewayMetrics.cascade``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.metric_series import PREFIX, Children, Series

__all__ = ["CascadeMetrics"]

CONFIDENCE_BUCKETS = (-10.0, -5.0, -3.0, -2.0, -1.5, -1.0, -0.75, -0.5, -0.25, -0.1, 0.0)
EXTRA_S_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
RESULTS = ("kept", "observed", "escalated", "unescalated", "escalation_failed")


class CascadeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        s = Series(registry, PREFIX + "cascade_")
        self.decisions = s.counter(
            "total",
            "Cascade decisions: kept (confident), escalated, unescalated (no other eligible"
            " backend), escalation_failed (every escalation candidate failed).",
            ["virtual_model", "rule", "result"],
        )
        self.confidence = s.histogram(
            "confidence",
            "Confidence of the self-hosted answer (mean log-prob of its least likely tokens).",
            ["virtual_model", "rule"],
            buckets=CONFIDENCE_BUCKETS,
        )
        self.extra_cost = s.counter(
            "extra_cost_usd_total",
            "Cost of self-hosted answers that were escalated (paid for, not used), in USD.",
            ["virtual_model", "rule"],
        )
        self.extra_seconds = s.histogram(
            "extra_seconds",
            "Latency an escalation added: the self-hosted attempt before the escalated answer.",
            ["virtual_model", "rule"],
            buckets=EXTRA_S_BUCKETS,
        )
        self._ch = Children()

    def prepare(self, rules: list[tuple[str, str]]) -> None:
        """Create every (virtual model, rule) series of the policy's cascade rules at 0, so
        rates and alerts see them before the first escalation."""
        for vmodel, rule in rules:
            for result in RESULTS:
                self._ch.get(self.decisions, vmodel, rule, result)
            self._ch.get(self.confidence, vmodel, rule)
            self._ch.get(self.extra_cost, vmodel, rule)
            self._ch.get(self.extra_seconds, vmodel, rule)

    def record(
        self,
        vmodel: str,
        rule: str,
        result: str,
        confidence: float | None,
        extra_cost_usd: float = 0.0,
        extra_s: float | None = None,
    ) -> None:
        self._ch.get(self.decisions, vmodel, rule, result).inc()
        if confidence is not None:
            self._ch.get(self.confidence, vmodel, rule).observe(confidence)
        if extra_cost_usd > 0:
            self._ch.get(self.extra_cost, vmodel, rule).inc(extra_cost_usd)
        if extra_s is not None:
            self._ch.get(self.extra_seconds, vmodel, rule).observe(extra_s)
