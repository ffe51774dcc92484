"""Fixtures: the policy of sim_helpers written to a file, and a log writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.simulate.sim_helpers import POLICY


@pytest.fixture
def policy_file(tmp_path: Path):
    def make(cap: str = "") -> Path:
        p = tmp_path / "policy.yaml"
        p.write_text(POLICY.replace("__CAP__", cap))
        return p

    return make


@pytest.fixture
def log_file(tmp_path: Path):
    def make(lines: list, name: str = "log.jsonl") -> Path:
        p = tmp_path / name
        p.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
        return p

    return make
