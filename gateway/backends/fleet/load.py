"""A replica's live load from its Prometheus text exposition, under vLLM's gauge names (which
our engine, vLLM and the Kubernetes inference extension all use):

    vllm:num_requests_running   requests in the running batch
    vllm:num_requests_waiting   requests queued
    vllm:kv_cache_usage_perc    KV-cache usage, 0-1 (older vLLM: vllm:gpu_cache_usage_perc)

A server with several models reports one child per ``model_name``: counts are summed, the KV
usage is the largest. A line scan, not a full parser: the page can be large and is read every
interval for every replica.
"""

from __future__ import annotations

from gateway.backends.fleet.balancer import ReplicaLoad

__all__ = ["MetricsFormatError", "parse_load"]

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_NAMES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


class MetricsFormatError(ValueError):
    """The page has none of the load gauges (not an engine that exports them?)."""


def _value(line: str) -> float:
    # `name{labels} value [timestamp]`: the value is the first field after the labels
    rest = line[line.rindex("}") + 1 :] if "}" in line else line.split(" ", 1)[1]
    return float(rest.split()[0])


def parse_load(text: str, at: float) -> ReplicaLoad:
    running = waiting = kv = 0.0
    seen = False
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        try:
            if name == RUNNING:
                running += _value(line)
            elif name == WAITING:
                waiting += _value(line)
            elif name in KV_NAMES:
                kv = max(kv, _value(line))
            else:
                continue
        except (ValueError, IndexError) as exc:
            raise MetricsFormatError(f"cannot read {line[:80]!r}") from exc
        seen = True
    if not seen:
        raise MetricsFormatError(f"no {RUNNING} / {WAITING} / {KV_NAMES[0]} on the page")
    return ReplicaLoad(running=running, waiting=waiting, kv_cache_usage=kv, at=at)
