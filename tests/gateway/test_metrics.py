from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.backends.base import Usage
from gateway.metrics import GatewayMetrics


def samples(m: GatewayMetrics) -> dict[tuple[str, tuple], float]:
    body, ctype = m.render()
    assert ctype.startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(s: dict, name: str, **labels) -> float:
    return s.get((name, tuple(sorted(labels.items()))), 0.0)


def one_request(m: GatewayMetrics, **kw) -> None:
    args = dict(
        virtual_model="auto",
        backend="local",
        route_reason="everyday",
        status=200,
        cache="miss",
        team="red",
        duration_s=0.2,
        upstream_s=0.19,
        overhead_s=0.0004,
        usage=Usage(100, 20),
        cost_usd=0.001,
        savings_usd=0.004,
        ttft_s=None,
    )
    args.update(kw)
    m.record_request(**args)


def test_request_series_and_units():
    m = GatewayMetrics()
    one_request(m)
    one_request(
        m, status=503, cache="bypass", usage=None, cost_usd=0.0, savings_usd=0.0, upstream_s=0.0
    )
    one_request(m, backend="openai", ttft_s=0.3, usage=Usage(10, 5), cost_usd=0.5, savings_usd=0.0)
    s = samples(m)
    req = dict(virtual_model="auto", route_reason="everyday", protocol="openai")
    assert (
        value(s, "gateway_requests_total", backend="local", status_class="2xx", cache="miss", **req)
        == 1
    )
    assert (
        value(
            s, "gateway_requests_total", backend="local", status_class="5xx", cache="bypass", **req
        )
        == 1
    )
    assert value(s, "gateway_prompt_tokens_total", virtual_model="auto", backend="local") == 100
    assert value(s, "gateway_completion_tokens_total", virtual_model="auto", backend="openai") == 5
    assert value(
        s, "gateway_cost_usd_total", virtual_model="auto", backend="local"
    ) == pytest.approx(0.001)
    assert value(
        s, "gateway_cost_usd_total", virtual_model="auto", backend="openai"
    ) == pytest.approx(0.5)
    assert value(
        s, "gateway_savings_usd_total", virtual_model="auto", backend="local"
    ) == pytest.approx(0.004)
    assert (
        value(s, "gateway_request_duration_seconds_count", virtual_model="auto", backend="local")
        == 2
    )
    assert (
        value(s, "gateway_upstream_duration_seconds_count", backend="local") == 1
    )  # not for the no-upstream one
    assert value(s, "gateway_overhead_seconds_count") == 3
    assert value(s, "gateway_overhead_seconds_bucket", le="0.0005") == 3
    assert value(s, "gateway_time_to_first_token_seconds_count", backend="openai") == 1
    assert value(s, "gateway_time_to_first_token_seconds_count", backend="local") == 0
    names = {n for n, _ in s}
    assert all(n.startswith("gateway_") for n in names)
    assert not any("team" in dict(lbl) for _, lbl in s)


def test_every_event_counter():
    m = GatewayMetrics()
    m.record_error("auto", "openai", "UpstreamTimeoutError")
    m.record_fallback("auto", "local", "openai")
    m.record_retry("local")
    m.record_retry("local")
    m.set_circuit_state("local", "open")
    m.set_circuit_state("openai", "half_open")
    m.set_circuit_state("anthropic", 0)
    for r in ("hit", "miss", "miss", "bypass", "error"):
        m.record_cache(r)
    m.record_stream_error("local")
    m.record_router_failure()
    m.record_state_error()
    m.record_rate_limited("rpm")
    m.record_policy_reload(True)
    m.record_policy_reload(False)
    m.record_policy_reload(False)
    s = samples(m)
    assert (
        value(
            s,
            "gateway_errors_total",
            virtual_model="auto",
            backend="openai",
            error_type="UpstreamTimeoutError",
        )
        == 1
    )
    assert (
        value(
            s,
            "gateway_fallbacks_total",
            virtual_model="auto",
            from_backend="local",
            to_backend="openai",
        )
        == 1
    )
    assert value(s, "gateway_retries_total", backend="local") == 2
    assert value(s, "gateway_circuit_state", backend="local") == 2
    assert value(s, "gateway_circuit_state", backend="openai") == 1
    assert ("gateway_circuit_state", (("backend", "anthropic"),)) in s
    assert value(s, "gateway_cache_requests_total", result="miss") == 2
    assert value(s, "gateway_cache_requests_total", result="error") == 1
    assert value(s, "gateway_stream_errors_total", backend="local") == 1
    assert value(s, "gateway_router_failures_total") == 1
    assert value(s, "gateway_state_errors_total") == 1
    assert value(s, "gateway_rate_limited_total", kind="rpm") == 1
    assert value(s, "gateway_policy_reloads_total", result="success") == 1
    assert value(s, "gateway_policy_reloads_total", result="failure") == 2
    with pytest.raises(ValueError):
        m.set_circuit_state("local", "ajar")
    with pytest.raises(KeyError):
        m.record_cache("maybe")


def test_team_label_only_when_enabled():
    m = GatewayMetrics(team_label=True)
    one_request(m, team="red")
    one_request(m, team="blue")
    s = samples(m)
    assert value(
        s, "gateway_cost_usd_total", virtual_model="auto", backend="local", team="red"
    ) == pytest.approx(0.001)
    m.team_label = False  # a reload turned it off: the series lose the label
    one_request(m, team="red")
    s = samples(m)
    assert value(s, "gateway_prompt_tokens_total", virtual_model="auto", backend="local") == 100
    assert not any(dict(lbl).get("team") for _, lbl in s)


def test_instances_do_not_share_state():
    a, b = GatewayMetrics(), GatewayMetrics()
    one_request(a)
    assert value(samples(b), "gateway_overhead_seconds_count") == 0


WRITER = textwrap.dedent(
    """
    import os, sys
    early = sys.argv[3] == "early"
    if early:  # the env var is set before prometheus_client is imported
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
    import prometheus_client  # noqa: F401  imported first, as a library might
    from gateway.metrics import GatewayMetrics, prepare_multiprocess
    from gateway.backends.base import Usage
    if not early:  # the CLI's way: the parent prepares after imports
        prepare_multiprocess(sys.argv[1])
    m = GatewayMetrics()
    n = int(sys.argv[2])
    for _ in range(n):
        m.record_request("auto", "local", "everyday", 200, "miss", "red", 0.1, 0.09, 0.01, Usage(10, 1), 0.5, 1.0)
    m.record_cache("hit")
    m.set_circuit_state("local", "open" if n == 3 else "closed")
    body, _ = m.render()
    assert b"gateway_requests_total" in body
    """
)


def test_multiprocess_metrics_add_up_across_real_processes(tmp_path):
    d = tmp_path / "prom"
    d.mkdir()
    env = {**os.environ}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    procs = [
        subprocess.run(
            [sys.executable, "-c", WRITER, str(d), "3", "late"],
            env=env,
            capture_output=True,
            text=True,
        ),
        subprocess.run(
            [sys.executable, "-c", WRITER, str(d), "5", "early"],
            env=env,
            capture_output=True,
            text=True,
        ),
    ]
    for p in procs:
        assert p.returncode == 0, p.stderr
    assert len(list(d.glob("*.db"))) >= 2
    s = samples(GatewayMetrics(multiprocess_dir=str(d)))
    labels = dict(
        virtual_model="auto",
        backend="local",
        route_reason="everyday",
        status_class="2xx",
        cache="miss",
        protocol="openai",
    )
    assert value(s, "gateway_requests_total", **labels) == 8
    assert value(s, "gateway_prompt_tokens_total", virtual_model="auto", backend="local") == 80
    assert value(
        s, "gateway_cost_usd_total", virtual_model="auto", backend="local"
    ) == pytest.approx(4.0)
    assert value(s, "gateway_cache_requests_total", result="hit") == 2
    assert value(s, "gateway_overhead_seconds_count") == 8
    assert value(s, "gateway_circuit_state", backend="local") == 2  # the worst any worker saw
