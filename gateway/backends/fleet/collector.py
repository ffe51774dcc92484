"""Fleet series for ``/metrics``, read from the live fleets at scrape time (nothing is done per
request beyond the fleet's own integer counts). Labels: the policy's backend name and the
replica's ``host:port``, bounded by the fleet's size.

With ``serve --workers N`` these series are the answering worker's view of its fleets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.backends.fleet.backend import FleetBackend
from gateway.backends.resilience import STATE_VALUE

__all__ = ["FleetCollector"]

P = "gateway_fleet_"


def replica_label(key: str) -> str:
    return urlsplit(key).netloc or key


class FleetCollector:
    def __init__(self, fleets: Callable[[], Iterable[FleetBackend]]) -> None:
        self._fleets = fleets

    def describe(self) -> list[Metric]:
        return []  # series come and go with the policy; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        labels = ["backend", "replica"]
        up = GaugeMetricFamily(
            P + "replica_up",
            "1 if the replica takes requests (circuit not open, last metrics scrape answered).",
            labels=labels,
        )
        circuit = GaugeMetricFamily(
            P + "replica_circuit_state",
            "Circuit breaker per replica: 0 closed, 1 half-open, 2 open.",
            labels=labels,
        )
        outstanding = GaugeMetricFamily(
            P + "replica_outstanding_requests",
            "Requests this gateway has in flight on the replica.",
            labels=labels,
        )
        running = GaugeMetricFamily(
            P + "replica_running_requests",
            "Running requests the replica reported (vllm:num_requests_running).",
            labels=labels,
        )
        waiting = GaugeMetricFamily(
            P + "replica_waiting_requests",
            "Queued requests the replica reported (vllm:num_requests_waiting).",
            labels=labels,
        )
        kv = GaugeMetricFamily(
            P + "replica_kv_cache_usage",
            "KV-cache usage the replica reported, 0-1 (vllm:kv_cache_usage_perc).",
            labels=labels,
        )
        requests = CounterMetricFamily(
            P + "replica_requests",
            "Requests sent to the replica, by result (ok, error).",
            labels=[*labels, "result"],
        )
        spill = CounterMetricFamily(
            P + "spillover",
            "Requests that found every replica saturated: spilled to the next backend, "
            "waited in a replica's queue, or refused.",
            labels=["backend", "outcome"],
        )
        affinity = CounterMetricFamily(
            P + "prefix_affinity",
            "Prefix-affinity choices: the conversation's home replica, or moved on (bounded load).",
            labels=["backend", "result"],
        )
        for fleet in self._fleets():
            name = fleet.name
            scraping = fleet.fleet.metrics_path is not None
            for key, r in list(fleet.balancer.replicas.items()):
                lv = [name, replica_label(key)]
                up.add_metric(lv, float(r.usable() and (r.scrape_ok or not scraping)))
                circuit.add_metric(lv, float(STATE_VALUE[r.breaker.state]))
                outstanding.add_metric(lv, float(r.outstanding))
                if r.load is not None:
                    running.add_metric(lv, r.load.running)
                    waiting.add_metric(lv, r.load.waiting)
                    kv.add_metric(lv, r.load.kv_cache_usage)
            for (key, result), n in list(fleet.counters.requests.items()):
                requests.add_metric([name, replica_label(key), result], float(n))
            for outcome, n in fleet.counters.spill.items():
                spill.add_metric([name, outcome], float(n))
            for result, n in fleet.counters.affinity.items():
                affinity.add_metric([name, result], float(n))
        yield from (up, circuit, outstanding, running, waiting, kv, requests, spill, affinity)
