"""Prometheus metrics for one server app, in its own CollectorRegistry (no process-global state).

Engine-side numbers (queue lengths, KV usage, prefix cache, preemptions, token counters) are
read from ``engine.stats()`` at scrape time by a custom collector, so they are never stale or
double-counted. Request latencies (time to first token, inter-token latency, end-to-end) are
histograms the HTTP handlers observe.

vLLM names, on purpose: a gateway or the Kubernetes Gateway API inference extension
(endpoint picker) balances on each backend's queue length and KV-cache usage, and reads them
under vLLM's names. So the load gauges are exported twice, under our ``local_engine_*`` names
and as ``vllm:num_requests_waiting``, ``vllm:num_requests_running``,
``vllm:gpu_cache_usage_perc`` and ``vllm:kv_cache_usage_perc`` (0-1, despite "perc", like vLLM),
labelled ``model_name``. Any tool that scrapes a vLLM server then works unchanged against ours.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "RequestTimer", "ServerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ITL_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5)
E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0)
# (our gauge name, vLLM alias names, EngineStats attribute, help)
_GAUGES = (
    (
        "local_engine_num_requests_running",
        ("vllm:num_requests_running",),
        "num_running",
        "Requests in the running batch.",
    ),
    (
        "local_engine_num_requests_waiting",
        ("vllm:num_requests_waiting",),
        "num_waiting",
        "Requests waiting to be scheduled.",
    ),
    (
        "local_engine_kv_cache_usage",
        ("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"),
        "kv_cache_usage",
        "Fraction of KV-cache blocks in use (0-1).",
    ),
)
# (counter name without _total, EngineStats attribute, help)
_COUNTERS = (
    (
        "local_engine_prefix_cache_queries",
        "prefix_cache_queries",
        "Prompt tokens looked up in the prefix cache.",
    ),
    (
        "local_engine_prefix_cache_hits",
        "prefix_cache_hits",
        "Prompt tokens found in the prefix cache.",
    ),
    ("local_engine_num_preemptions", "num_preemptions", "Sequences preempted (recomputed later)."),
    ("local_engine_prompt_tokens", "prompt_tokens", "Prompt tokens processed."),
    ("local_engine_generation_tokens", "generation_tokens", "Tokens generated."),
)


class _EngineStatsCollector(Collector):
    def __init__(self, stats: Callable[[], Any], model_name: str) -> None:
        self._stats = stats
        self._model_name = model_name

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        for name, aliases, attr, doc in _GAUGES:
            value = float(getattr(stats, attr))
            for metric_name in (name, *aliases):
                family = GaugeMetricFamily(metric_name, doc, labels=["model_name"])
                family.add_metric([self._model_name], value)
                yield family
        for name, attr, doc in _COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=["model_name"])
            counter.add_metric([self._model_name], float(getattr(stats, attr)))
            yield counter


class RequestTimer:
    """Latency of one request; feed it each engine output that carried new tokens."""

    __slots__ = ("_metrics", "_start", "_last")

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics
        self._start = time.perf_counter()
        self._last: float | None = None

    def on_tokens(self, num_new_tokens: int) -> None:
        if num_new_tokens <= 0:
            return
        now = time.perf_counter()
        if self._last is None:
            self._metrics.ttft.observe(now - self._start)
        else:
            self._metrics.itl.observe((now - self._last) / num_new_tokens)
        self._last = now

    def on_finish(self, finish_reason: str | None) -> None:
        self._metrics.e2e.observe(time.perf_counter() - self._start)
        self._metrics.finished.labels(finish_reason=finish_reason or "unknown").inc()


class ServerMetrics:
    def __init__(self, model_name: str, stats: Callable[[], Any]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_EngineStatsCollector(stats, model_name))
        kw: dict[str, Any] = {"registry": self.registry}
        self.ttft = Histogram(
            "local_engine_time_to_first_token_seconds",
            "Time to first token.",
            buckets=TTFT_BUCKETS,
            **kw,
        )
        self.itl = Histogram(
            "local_engine_inter_token_latency_seconds",
            "Time between output tokens.",
            buckets=ITL_BUCKETS,
            **kw,
        )
        self.e2e = Histogram(
            "local_engine_e2e_request_latency_seconds",
            "Request latency, arrival to finish.",
            buckets=E2E_BUCKETS,
            **kw,
        )
        self.finished = Counter(
            "local_engine_request_success",
            "Finished requests by finish reason.",
            ["finish_reason"],
            **kw,
        )

    def timer(self) -> RequestTimer:
        return RequestTimer(self)

    def render(self) -> bytes:
        return generate_latest(self.registry)
