"""deploy/prometheus: scrape config, recording rules and alerts refer to series that exist, with
labels they have; promtool (when installed) accepts them and their unit tests pass."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from deploy_files import DEPLOY
from promql_refs import check_refs, promql_refs

PROM = DEPLOY / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not on PATH (.ci/run installs Debian's `prometheus` package for it)",
)

REQUIRED_RECORDS = {
    "job:gateway_cost_usd:increase1h",
    "job:gateway_cost_usd:increase1d",
    "job:gateway_savings_usd:increase1h",
    "job:gateway_savings_usd:increase1d",
    "job:gateway_local_requests:ratio_rate5m",
    "job:gateway_errors_5xx:ratio_rate5m",
    "job:gateway_overhead_seconds:p95_5m",
    "job:gateway_request_duration_seconds:p95_5m",
}
REQUIRED_ALERTS = {
    "GatewayDown",
    "GatewayHigh5xxRatio",
    "GatewayCircuitOpen",
    "GatewayPolicyReloadFailed",
    "GatewayStateErrors",
    "LocalEngineQueueBackingUp",
    "LocalEngineKVCacheNearFull",
    "GatewaySavingsDropped",
    "GatewayShadowQualityKeptLocalLow",
}


def rules(groups: list[dict]) -> list[dict]:
    return [r for g in groups for r in g["rules"]]


def recorded_series(groups: list[dict]) -> dict[str, frozenset[str]]:
    """Recording rule name -> the labels it keeps (its aggregation's grouping labels, less `le`)."""
    return {
        r["record"]: frozenset(promql_refs(r["expr"]).grouping_labels - {"le"})
        for r in rules(groups)
        if "record" in r
    }


def run_promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=PROM, capture_output=True, text=True, timeout=120)


def test_rules_cover_what_operators_need(rule_groups):
    names = {r.get("record") or r.get("alert") for r in rules(rule_groups)}
    assert REQUIRED_RECORDS <= names, REQUIRED_RECORDS - names
    assert REQUIRED_ALERTS <= names, REQUIRED_ALERTS - names


def test_every_rule_refers_to_live_series_and_labels(rule_groups, exported_series):
    known = {**exported_series, **recorded_series(rule_groups)}
    problems = {
        r.get("record") or r["alert"]: p
        for r in rules(rule_groups)
        if (p := check_refs(r["expr"], known))
    }
    assert not problems, problems


def test_alerts_carry_severity_and_summary(rule_groups):
    for r in rules(rule_groups):
        if "alert" in r:
            assert r["labels"]["severity"] in {"critical", "warning"}, r["alert"]
            assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_scrape_config_covers_gateway_and_engine():
    config = yaml.safe_load((PROM / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    # alerts.yml selects on these job names
    assert jobs["gateway"]["static_configs"][0]["targets"] == ["gateway:4000"]
    assert jobs["local-engine"]["static_configs"][0]["targets"] == ["local-engine:8000"]
    for name in ("gateway", "local-engine"):
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"
    for f in config["rule_files"]:
        assert (PROM / f).is_file(), f


def test_reference_checker_rejects_wrong_names(exported_series):
    # the checker above must be able to fail: misspelt series, absent label, grouping by a missing label
    assert check_refs("rate(gateway_request_total[5m])", exported_series)
    assert check_refs('sum(rate(gateway_requests_total{model="x"}[5m]))', exported_series)
    assert check_refs("sum by (team) (rate(gateway_cost_usd_total[5m]))", exported_series)
    assert check_refs("vllm:num_requests_waiting", exported_series) == []


@needs_promtool
def test_promtool_check_config():
    res = run_promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr


@needs_promtool
def test_promtool_check_rules():
    res = run_promtool("check", "rules", "alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr


@needs_promtool
def test_promtool_alert_unit_tests():
    res = run_promtool("test", "rules", "tests.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr
