"""Fixtures for the deploy tests: the series a live gateway and the engine expose, once per session."""

from __future__ import annotations

import pytest
from deploy_files import load_yaml
from live_metrics import engine_series, gateway_series

TARGET_SERIES = {"up": frozenset({"job", "instance"})}  # Prometheus' own, per scrape target


@pytest.fixture(scope="session")
def live_gateway(tmp_path_factory) -> tuple[dict[str, frozenset[str]], str]:
    """(series -> label names, /metrics text) of a real gateway after varied traffic."""
    return gateway_series(tmp_path_factory.mktemp("gateway"))


@pytest.fixture(scope="session")
def exported_series(live_gateway) -> dict[str, frozenset[str]]:
    """Every series deploy/ may refer to, except recording rules: gateway, engine, `up`."""
    return {**live_gateway[0], **engine_series(), **TARGET_SERIES}


@pytest.fixture(scope="session")
def rule_groups() -> list[dict]:
    return load_yaml("prometheus/alerts.yml")["groups"]
