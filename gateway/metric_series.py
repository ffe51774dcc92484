"""Declaring the gateway's Prometheus series, and looking up their label children once.

Every metrics group (``gateway/metrics.py``, shadow, cascade, ledger) registers on the one
registry ``GatewayMetrics`` owns, under the ``gateway_`` prefix; ``Series`` holds the registry
and the prefix so that a declaration says only what differs: name, help, labels, and a gauge's
multiprocess mode or a histogram's buckets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["PREFIX", "Children", "Series"]

PREFIX = "gateway_"
# prometheus_client's Gauge(multiprocess_mode=...) values
MultiprocessMode = Literal[
    "all",
    "liveall",
    "min",
    "livemin",
    "max",
    "livemax",
    "sum",
    "livesum",
    "mostrecent",
    "livemostrecent",
]


class Series:
    """Metrics declared on ``registry``, each named ``prefix + name``."""

    def __init__(self, registry: CollectorRegistry, prefix: str = PREFIX) -> None:
        self.registry = registry
        self.prefix = prefix

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(self.prefix + name, doc, labels, registry=self.registry)

    def gauge(
        self, name: str, doc: str, labels: Sequence[str] = (), *, mode: MultiprocessMode
    ) -> Gauge:
        """``mode``: how several worker processes' values merge (prometheus_client's
        ``multiprocess_mode``: livesum, livemax, livemin, ...)."""
        return Gauge(
            self.prefix + name, doc, labels, registry=self.registry, multiprocess_mode=mode
        )

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), *, buckets: Sequence[float]
    ) -> Histogram:
        return Histogram(self.prefix + name, doc, labels, buckets=buckets, registry=self.registry)


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
