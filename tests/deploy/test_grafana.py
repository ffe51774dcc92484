"""deploy/grafana: the "LLM gateway" dashboard's queries refer to live series and labels, parse
with promtool (when installed), and cover what the dashboard is for; provisioning points at
the compose services and mounts."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from deploy_files import load_json, load_yaml
from promql_refs import check_refs, promql_refs, substitute_grafana_vars

DASHBOARD = "grafana/dashboards/llm-gateway.json"
LOCAL_DEFAULT = "local.*|qwen.*"

# what the dashboard must show: panel-title words -> a series one of its queries must read
REQUIRED = {
    "spend": "gateway_cost_usd_total",
    "savings": "gateway_savings_usd_total",
    "route reason": "gateway_requests_total",
    "latency p50 / p95": "gateway_request_duration_seconds_bucket",
    "overhead p50 / p99": "gateway_overhead_seconds_bucket",
    "time to first token": "gateway_time_to_first_token_seconds_bucket",
    "error ratio": "gateway_requests_total",
    "fallbacks": "gateway_fallbacks_total",
    "retries": "gateway_retries_total",
    "circuit state": "gateway_circuit_state",
    "cache hit ratio": "gateway_cache_requests_total",
    "tokens": "gateway_completion_tokens_total",
    "queue": "local_engine_num_requests_waiting",
    "kv-cache": "local_engine_kv_cache_usage",
    "self-hosted vs proprietary": "gateway_requests_total",
    "quality kept local": "gateway_shadow_judgements_total",
    "shadow spend": "gateway_shadow_spend_usd_total",
    "cascade decisions": "gateway_cascade_total",
    "token counts": "gateway_token_count_requests_total",
}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return load_json(DASHBOARD)


def panels(d: dict) -> list[dict]:
    return [p for p in d["panels"] if p["type"] != "row"]


def variables(d: dict) -> dict[str, dict]:
    return {v["name"]: v for v in d["templating"]["list"]}


def queries(d: dict) -> list[tuple[str, str]]:
    """(panel title, query with the variables at their defaults) for every target."""
    values = {"local_backends": LOCAL_DEFAULT, "virtual_model": ".*", "datasource": "prometheus"}
    return [
        (p["title"], substitute_grafana_vars(t["expr"], values))
        for p in panels(d)
        for t in p["targets"]
    ]


def test_dashboard_identity_and_variables(dashboard):
    assert dashboard["title"] == "LLM gateway"
    assert dashboard["uid"] == "llm-gateway"
    v = variables(dashboard)
    assert v["local_backends"]["type"] == "textbox"
    assert v["local_backends"]["query"] == LOCAL_DEFAULT == v["local_backends"]["current"]["value"]
    assert v["datasource"]["type"] == "datasource" and v["datasource"]["query"] == "prometheus"
    vm = promql_refs(
        re.sub(r"label_values\((\w+), (\w+)\)", r"\1", v["virtual_model"]["definition"])
    )
    assert [s.name for s in vm.selectors] == ["gateway_requests_total"]


def test_every_query_refers_to_live_series_and_labels(dashboard, exported_series):
    problems = {
        f"{title}: {q}": p
        for title, q in queries(dashboard)
        if (p := check_refs(q, exported_series))
    }
    assert not problems, problems


def test_dashboard_covers_its_purpose(dashboard):
    by_title = {}
    for title, q in queries(dashboard):
        by_title.setdefault(title.lower(), set()).update(s.name for s in promql_refs(q).selectors)
    for words, series in REQUIRED.items():
        hits = [t for t in by_title if words in t]
        assert hits, f"no panel titled with {words!r}"
        assert any(series in by_title[t] for t in hits), f"panels {hits} do not read {series}"


def test_self_hosted_split_uses_the_variable(dashboard):
    raw = [t["expr"] for p in panels(dashboard) for t in p["targets"]]
    local = [e for e in raw if 'backend=~"$local_backends"' in e]
    proprietary = [e for e in raw if 'backend!~"$local_backends|none"' in e]
    assert local and proprietary


def test_quantile_panels_read_buckets_by_le(dashboard):
    for title, q in queries(dashboard):
        if "histogram_quantile" in q:
            refs = promql_refs(q)
            assert "le" in refs.grouping_labels, title
            assert all(s.name.endswith("_bucket") for s in refs.selectors), title


def test_panels_are_well_formed(dashboard):
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels(dashboard):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]


def test_provisioning_matches_compose():
    ds = load_yaml("grafana/provisioning/datasources/prometheus.yml")["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    provider = load_yaml("grafana/provisioning/dashboards/llm-gateway.yml")["providers"][0]
    compose = load_yaml("compose/docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "../grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not on PATH (.ci/run installs Debian's `prometheus` package for it)",
)
def test_every_query_parses_with_promtool(dashboard, tmp_path):
    # promtool has no "check expression"; each query as a recording rule gets the full parser
    rules = [
        {"record": f"dashboard:query_{i}", "expr": q} for i, (_, q) in enumerate(queries(dashboard))
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8"
    )
    res = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(rules)} rules found" in res.stdout
