"""Every YAML and JSON file under deploy/ parses."""

from __future__ import annotations

import json

import pytest
import yaml
from deploy_files import DEPLOY

FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml", ".json"})


def test_deploy_has_its_files():
    names = {p.relative_to(DEPLOY).as_posix() for p in FILES}
    assert {
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "prometheus/tests.yml",
        "grafana/dashboards/llm-gateway.json",
        "compose/docker-compose.yml",
        "k8s/gateway-deployment.yaml",
        "k8s/local-engine-deployment.yaml",
    } <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_parses(path):
    text = path.read_text(encoding="utf-8")
    docs = [json.loads(text)] if path.suffix == ".json" else list(yaml.safe_load_all(text))
    assert docs and all(isinstance(d, dict) for d in docs if d is not None)
