"""Prometheus metrics: one prefix (``gateway_``), base units, ``_total`` counters, bounded labels.

Every series hangs off a registry owned by ``GatewayMetrics`` (no globals). Labels are the
backend and virtual-model names of the policy, the route reason (a rule name), a status
class, a cache result and, only when ``metrics.team_label`` is on, the team: all bounded by
the policy, never by clients. Label children are looked up once and kept in dicts, so the
request path pays a dict lookup and a few increments.

Several worker processes: the CLI calls ``prepare_multiprocess(dir)`` in the parent before
the workers start; each worker then writes its values to files in ``dir`` and ``render()``
merges all of them (prometheus_client's multiprocess mode). Circuit-state gauges report the
worst state any live worker sees.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.cascade.metrics import CascadeMetrics
from gateway.metric_series import Children, Series
from gateway.shadow.metrics import ShadowMetrics

__all__ = ["GatewayMetrics", "prepare_multiprocess", "MULTIPROC_ENV"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2, 0: 0, 1: 1, 2: 2}
CACHE_RESULTS = ("hit", "miss", "bypass", "error")

LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def prepare_multiprocess(path: str) -> str:
    """Put metrics of this process and its future children into files under ``path``.

    Call once in the parent before workers start. Stale files of an earlier run are removed.
    Works even if prometheus_client was already imported (its value class is swapped)."""
    os.makedirs(path, exist_ok=True)
    for f in glob.glob(os.path.join(path, "*.db")):
        os.remove(f)
    os.environ[MULTIPROC_ENV] = path
    values: Any = sys.modules.get("prometheus_client.values")  # a module; swapped in place
    if values is not None:
        values.ValueClass = values.MultiProcessValue()
    return path


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


class GatewayMetrics:
    """The gateway's metrics. ``multiprocess_dir``: render the merged files of every worker
    (default: ``$PROMETHEUS_MULTIPROC_DIR`` if set)."""

    def __init__(self, team_label: bool = False, multiprocess_dir: str | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = multiprocess_dir or os.environ.get(MULTIPROC_ENV) or None
        s = Series(self.registry)
        self.errors = s.counter(
            "errors_total",
            "Requests that ended in an error, by error type.",
            ["virtual_model", "backend", "error_type"],
        )
        self.fallbacks = s.counter(
            "fallbacks_total",
            "Moves from a failed backend to the next candidate.",
            ["virtual_model", "from_backend", "to_backend"],
        )
        self.retries = s.counter("retries_total", "Retries against the same backend.", ["backend"])
        self.circuit_state = s.gauge(
            "circuit_state",
            "Circuit breaker per backend: 0 closed, 1 half-open, 2 open.",
            ["backend"],
            mode="livemax",
        )
        self.request_duration = s.histogram(
            "request_duration_seconds",
            "End-to-end request time in the gateway.",
            ["virtual_model", "backend"],
            buckets=LATENCY_BUCKETS,
        )
        self.upstream_duration = s.histogram(
            "upstream_duration_seconds",
            "Time spent waiting on upstreams.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
        )
        self.overhead = s.histogram(
            "overhead_seconds",
            "Time spent in the gateway itself (request minus upstream).",
            buckets=OVERHEAD_BUCKETS,
        )
        self.ttft = s.histogram(
            "time_to_first_token_seconds",
            "Time to the first event of a streamed answer.",
            ["backend"],
            buckets=TTFT_BUCKETS,
        )
        self.cache_requests = s.counter(
            "cache_requests_total", "Answer-cache lookups by result.", ["result"]
        )
        self.policy_reloads = s.counter(
            "policy_reloads_total", "Policy reloads by result.", ["result"]
        )
        self.stream_errors = s.counter(
            "stream_errors_total", "Streams that failed after the first byte.", ["backend"]
        )
        self.router_failures = s.counter(
            "router_failures_total", "Difficulty scorer failures (heuristic used)."
        )
        self.state_errors = s.counter(
            "state_errors_total", "Shared-state (Redis) calls that failed or were skipped."
        )
        self.rate_limited = s.counter(
            "rate_limited_total", "Requests refused by a rate limit or budget.", ["kind"]
        )
        self.provenance_refusals = s.counter(
            "provenance_refusals_total",
            "Requests refused because a provenance rule (team, key or data rule) forbids every "
            "backend that could serve them, by rule.",
            ["rule"],
        )
        self.provenance_skips = s.counter(
            "provenance_skips_total",
            "Candidate backends a provenance rule removed from a request (never called), by rule.",
            ["rule", "backend"],
        )
        self.shadow = ShadowMetrics(self.registry)
        self.cascade = CascadeMetrics(self.registry)
        self.budget_remaining = s.gauge(
            "budget_remaining_usd",
            "Budget left in the current period, per key or team with a budget (scope: key:NAME "
            "or team:NAME, bounded by the policy); as last seen by this process.",
            ["scope"],
            mode="livemin",
        )
        self.untranslated = s.counter(
            "untranslated_requests_total",
            "Messages or Responses bodies with no chat form, by protocol: sent only to backends "
            "taking them natively (native) or refused, none of those being allowed (refused).",
            ["protocol", "outcome"],
        )
        self.token_counts = s.counter(
            "token_count_requests_total",
            "POST /v1/messages/count_tokens answers, by the backend the policy chose for the "
            "request (none: no backend) and how they were counted: upstream (the backend's own "
            "count) or estimate (the gateway's).",
            ["backend", "outcome"],
        )
        self.degraded = s.counter(
            "degraded_requests_total",
            "Requests whose rule named only unconfigured backends, served self-hosted instead.",
            ["virtual_model", "route_reason"],
        )
        self._cache_children = {res: self.cache_requests.labels(res) for res in CACHE_RESULTS}
        self._reload_children = {
            True: self.policy_reloads.labels("success"),
            False: self.policy_reloads.labels("failure"),
        }
        self._children = Children()
        self._collectors: list[Any] = []  # read at scrape time (fleets), in every render mode
        self._team_label = team_label
        self._build_team_metrics()

    # ------------------------------------------------------------ team-labelled series

    @property
    def team_label(self) -> bool:
        return self._team_label

    @team_label.setter
    def team_label(self, on: bool) -> None:
        """Switching the team label rebuilds the series that carry it (their counts restart)."""
        if on != self._team_label:
            self._team_label = on
            for m in (
                self.requests,
                self.prompt_tokens,
                self.completion_tokens,
                self.cost,
                self.savings,
            ):
                self.registry.unregister(m)
            self._build_team_metrics()

    def _build_team_metrics(self) -> None:
        s = Series(self.registry)
        team = ["team"] if self._team_label else []
        self.requests = s.counter(
            "requests_total",
            "Requests by virtual model, backend, route reason, status, cache and the caller's "
            "protocol (openai, anthropic, responses).",
            [
                "virtual_model",
                "backend",
                "route_reason",
                "status_class",
                "cache",
                "protocol",
                *team,
            ],
        )
        usage = ["virtual_model", "backend", *team]
        self.prompt_tokens = s.counter("prompt_tokens_total", "Prompt tokens processed.", usage)
        self.completion_tokens = s.counter(
            "completion_tokens_total", "Completion tokens generated.", usage
        )
        self.cost = s.counter("cost_usd_total", "What the answers cost, in USD.", usage)
        self.savings = s.counter(
            "savings_usd_total",
            "What the same tokens would have cost on the reference model, minus the real cost, in USD.",
            usage,
        )
        self._req_children: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def _request_children(self, key: tuple[Any, ...]) -> tuple[Any, ...]:
        vmodel, backend, reason, status, cache, protocol, team = key
        t = (team,) if self._team_label else ()
        usage = (vmodel, backend, *t)
        children = (
            self.requests.labels(
                vmodel, backend, reason, _status_class(status), cache, protocol, *t
            ),
            self.request_duration.labels(vmodel, backend),
            self.prompt_tokens.labels(*usage),
            self.completion_tokens.labels(*usage),
            self.cost.labels(*usage),
            self.savings.labels(*usage),
            self.upstream_duration.labels(backend),
            self.ttft.labels(backend),
        )
        self._req_children[key] = children
        return children

    # ------------------------------------------------------------ the request path

    def record_request(
        self,
        virtual_model: str,
        backend: str,
        route_reason: str,
        status: int,
        cache: str,
        team: str,
        duration_s: float,
        upstream_s: float = 0.0,
        overhead_s: float = 0.0,
        usage: Any = None,  # gateway.backends.base.Usage or None
        cost_usd: float = 0.0,
        savings_usd: float = 0.0,
        ttft_s: float | None = None,
        protocol: str = "openai",
    ) -> None:
        """Everything about one finished request, in one call."""
        key = (
            virtual_model,
            backend,
            route_reason,
            status,
            cache,
            protocol,
            team if self._team_label else None,
        )
        c = self._req_children.get(key) or self._request_children(key)
        c[0].inc()
        c[1].observe(duration_s)
        self.overhead.observe(overhead_s)
        if upstream_s > 0:
            c[6].observe(upstream_s)
        if ttft_s is not None:
            c[7].observe(ttft_s)
        if usage is not None:
            if usage.prompt_tokens:
                c[2].inc(usage.prompt_tokens)
            if usage.completion_tokens:
                c[3].inc(usage.completion_tokens)
        if cost_usd > 0:
            c[4].inc(cost_usd)
        if savings_usd > 0:
            c[5].inc(savings_usd)

    def record_error(self, virtual_model: str, backend: str, error_type: str) -> None:
        self._children.get(self.errors, virtual_model, backend, error_type).inc()

    def record_token_count(self, backend: str, outcome: str) -> None:
        """``outcome``: upstream or estimate."""
        self._children.get(self.token_counts, backend, outcome).inc()

    def record_degraded(self, virtual_model: str, route_reason: str) -> None:
        self._children.get(self.degraded, virtual_model, route_reason).inc()

    def record_untranslated(self, protocol: str, outcome: str) -> None:
        """``outcome``: native (sent to the backends taking it natively) or refused."""
        self._children.get(self.untranslated, protocol, outcome).inc()

    def record_fallback(self, virtual_model: str, from_backend: str, to_backend: str) -> None:
        self._children.get(self.fallbacks, virtual_model, from_backend, to_backend).inc()

    def record_retry(self, backend: str) -> None:
        self._children.get(self.retries, backend).inc()

    def set_circuit_state(self, backend: str, state: str | int) -> None:
        """``state``: "closed" / "half_open" / "open" (or 0 / 1 / 2)."""
        try:
            value = CIRCUIT_STATES[state]
        except KeyError:
            raise ValueError(f"unknown circuit state {state!r}") from None
        self._children.get(self.circuit_state, backend).set(value)

    def record_cache(self, result: str) -> None:
        """``result``: hit, miss, bypass or error."""
        self._cache_children[result].inc()

    def record_stream_error(self, backend: str) -> None:
        self._children.get(self.stream_errors, backend).inc()

    def record_router_failure(self) -> None:
        self.router_failures.inc()

    def record_state_error(self) -> None:
        self.state_errors.inc()

    def record_rate_limited(self, kind: str) -> None:
        """``kind``: what refused the request, e.g. "rpm" or "budget"."""
        self._children.get(self.rate_limited, kind).inc()

    def set_budget_remaining(self, scope: str, usd: float) -> None:
        self._children.get(self.budget_remaining, scope).set(max(0.0, usd))

    def record_provenance_skips(self, refused: tuple[tuple[str, str], ...]) -> None:
        """``refused``: (backend, rule) pairs of one request's decision."""
        for backend, rule in refused:
            self._children.get(self.provenance_skips, rule, backend).inc()

    def record_provenance_refusal(self, rules: tuple[str, ...]) -> None:
        for rule in rules:
            self._children.get(self.provenance_refusals, rule).inc()

    def record_policy_reload(self, ok: bool) -> None:
        self._reload_children[bool(ok)].inc()

    # ------------------------------------------------------------ exposition

    def add_collector(self, collector: Any) -> None:
        """A prometheus_client collector whose series are built at scrape time."""
        self._collectors.append(collector)
        self.registry.register(collector)

    def render(self) -> tuple[bytes, str]:
        """(body, content type) for GET /metrics; every worker's values in multiprocess mode."""
        if self.multiprocess_dir:
            merged = CollectorRegistry()
            MultiProcessCollector(merged, path=self.multiprocess_dir)
            for c in self._collectors:  # this worker's view
                merged.register(c)
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
