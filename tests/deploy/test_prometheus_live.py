"""The dashboard and the rules, evaluated by a real Prometheus server.

Prometheus (Debian's binary) runs on loopback with the project's scrape config and rules, pointed
at a real gateway (policies/default.yaml, heuristic scorer, its self-hosted backend a fleet) and
two real local engine replicas serving a tiny checkpoint, with a loopback mock as OpenAI. Traffic comes in two phases with a scrape in
between, so counters rise between samples and rates are not zero. Then every dashboard query
(template variables filled in) and every recording and alert expression goes through
``/api/v1/query``: none may error, and the panels that must show something after this traffic
return series.
"""

from __future__ import annotations

import re

import httpx
import pytest
import yaml
from deploy_files import REPO, load_json, load_yaml
from gateway_server import running_gateway
from openai import OpenAI
from prometheus_server import PROMETHEUS, Prometheus, running_prometheus
from promql_refs import substitute_grafana_vars
from server_harness import running_server

from local_engine.config import EngineConfig
from local_engine.demo_model import build_tiny_checkpoint
from tests.support.mock_openai import running_mock_openai
from tests.support.servers import MockControl

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None, reason="no prometheus binary (.ci/run installs Debian's `prometheus`)"
    ),
]

OPENAI_KEY = "sk-prom-live-openai"
VARIABLES = {"local_backends": "local.*|qwen.*", "virtual_model": ".*", "datasource": "x"}
# panels that must have series after the traffic below (every one of their queries)
MUST_HAVE_DATA = [
    "Spend (USD/hour) by backend",
    "Savings (USD/hour)",
    "Spend, last 24 h",
    "Savings, last 24 h",
    "Requests/s by backend",
    "Self-hosted vs proprietary (requests/s)",
    "Self-hosted share of requests",
    "Self-hosted share of tokens",
    "Requests/s by route reason",
    "Tokens/s by backend",
    "Requests/s by virtual model and status",
    "Request latency p50 / p95",
    "Gateway overhead p50 / p99",
    "Time to first token p50 / p95 (streams)",
    "Upstream latency p95 by backend",
    "Engine: TTFT and inter-token latency p95",
    "Circuit state by backend",
    "Cache hit ratio",
    "Cache lookups/s by result",
    "Engine queue",
    "KV-cache usage",
    "Engine tokens/s",
    "Prefix-cache hit ratio",
    "Fleet replicas up",
    "Fleet load per replica",
    "Fleet KV-cache usage per replica",
    "Fleet requests/s per replica",
    "Fleet spill-over per second",
    "Prefix-affinity home ratio",
    "Fleet replica circuit state",
]
# recording rules that must have a value after the traffic (Prometheus evaluates them itself)
MUST_RECORD = [
    "job:gateway_requests:rate5m",
    "job:gateway_local_requests:ratio_rate5m",
    "job:gateway_errors_5xx:ratio_rate5m",
    "job:gateway_cost_usd:increase1h",
    "job:gateway_savings_usd:increase1h",
    "job:gateway_request_duration_seconds:p95_5m",
]


def _policy(engines: list[str]) -> str:
    """policies/default.yaml with its self-hosted backend as a fleet of ``engines``."""
    policy = yaml.safe_load((REPO / "policies/default.yaml").read_text(encoding="utf-8"))
    policy["models"]["auto"]["difficulty"]["scorer"] = "heuristic"
    local = policy["backends"]["local"]
    local["capabilities"]["context_window"] = 512  # the tiny model's
    del local["base_url"]
    local["fleet"] = {"endpoints": [e + "/v1" for e in engines], "metrics_interval_s": 0.5}
    return yaml.safe_dump(policy, sort_keys=False)


def _traffic(url: str) -> int:
    """One round of varied requests; the number of requests sent."""
    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    msg = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]
    for _ in range(2):  # a cache miss, then a hit
        client.chat.completions.create(model="auto", messages=msg, max_tokens=4, temperature=0)
    client.chat.completions.create(model="auto", messages=msg, max_tokens=4, temperature=0.8)
    list(client.chat.completions.create(model="local", messages=msg, max_tokens=4, stream=True))
    list(client.chat.completions.create(model="gpt-4o", messages=msg, stream=True))
    client.chat.completions.create(model="gpt-4o", messages=msg)
    return 6


def _sum(prom: Prometheus, expr: str) -> float:
    result = prom.query(f"sum({expr})")
    return float(result[0]["value"][1]) if result else 0.0


def _wait_scraped(prom: Prometheus, gateway_url: str) -> None:
    """Until Prometheus holds the gateway's request count as it is now."""
    text = httpx.get(gateway_url + "/metrics").text
    now = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_requests_total{")
    )
    prom.wait_for(f"sum(gateway_requests_total) >= {now}")


@pytest.fixture(scope="module")
def prom(tmp_path_factory) -> Prometheus:
    tmp = tmp_path_factory.mktemp("prom-live")
    model = build_tiny_checkpoint(tmp / "model", "qwen2")
    engine = EngineConfig(
        model=str(model), num_kv_blocks=64, max_num_seqs=8, max_num_batched_tokens=256
    )
    policy = tmp / "policy.yaml"
    with (
        running_server(engine) as engine_a,
        running_server(engine) as engine_b,
        running_mock_openai(MockControl(api_key=OPENAI_KEY, models=["gpt-4o"])) as (openai, _),
    ):
        policy.write_text(_policy([engine_a, engine_b]), encoding="utf-8")
        env = {
            "OPENAI_BASE_URL": openai,
            "OPENAI_API_KEY": OPENAI_KEY,
        }
        with running_gateway(policy, env) as (url, _app):
            targets = {
                "gateway": [url.removeprefix("http://")],
                "local-engine": [e.removeprefix("http://") for e in (engine_a, engine_b)],
            }
            with running_prometheus(tmp, targets) as p:
                for job in targets:
                    p.wait_for(f'up{{job="{job}"}} == 1')
                _traffic(url)
                _wait_scraped(p, url)
                _traffic(url)
                _wait_scraped(p, url)
                p.wait_for("sum(local_engine_request_success_total) >= 4")
                for record in MUST_RECORD:
                    p.wait_for(record)
                yield p


def _dashboard_queries() -> list[tuple[str, str]]:
    d = load_json("grafana/dashboards/llm-gateway.json")
    return [
        (p["title"], substitute_grafana_vars(t["expr"], VARIABLES))
        for p in d["panels"]
        if p["type"] != "row"
        for t in p["targets"]
    ]


def _rule_exprs() -> list[tuple[str, str]]:
    groups = load_yaml("prometheus/alerts.yml")["groups"]
    return [(r.get("record") or r["alert"], r["expr"]) for g in groups for r in g["rules"]]


def test_every_dashboard_query_evaluates_and_the_busy_panels_have_data(prom):
    empty: dict[str, list[str]] = {}
    for title, expr in _dashboard_queries():
        if not prom.query(expr):  # raises on any query error
            empty.setdefault(title, []).append(expr)
    titles = {t for t, _ in _dashboard_queries()}
    assert set(MUST_HAVE_DATA) <= titles, set(MUST_HAVE_DATA) - titles
    missing = {t: e for t, e in empty.items() if t in MUST_HAVE_DATA}
    assert not missing, missing


def test_traffic_shows_as_nonzero_rates(prom):
    # the two traffic phases straddle a scrape: the request and cost rates are real numbers
    assert _sum(prom, 'rate(gateway_requests_total{backend="local"}[5m])') > 0
    assert _sum(prom, 'rate(gateway_requests_total{backend="openai"}[5m])') > 0
    assert _sum(prom, "increase(gateway_cost_usd_total[1h])") > 0
    assert _sum(prom, "increase(local_engine_generation_tokens_total[1h])") > 0


def test_every_rule_expression_evaluates(prom):
    for _name, expr in _rule_exprs():
        prom.query(expr)  # raises on any query error
    unhealthy = {r["name"]: r.get("lastError") for r in prom.rules() if r["health"] == "err"}
    assert not unhealthy, unhealthy
    loaded = {r["name"] for r in prom.rules()}
    assert loaded == {name for name, _ in _rule_exprs()}
    for record in MUST_RECORD:
        assert prom.query(record), record


def test_template_variable_query_lists_the_virtual_models(prom):
    d = load_json("grafana/dashboards/llm-gateway.json")
    var = next(v for v in d["templating"]["list"] if v["name"] == "virtual_model")
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["definition"]).groups()
    assert {"auto", "gpt-4o", "local"} <= set(prom.label_values(label, metric))
