"""A few seconds of bench/soak.py: real gateway, real engine on the demo model, its own Redis
killed and restarted mid-run. No unexpected errors; the poisoned direct requests are 400s."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_soak():
    spec = importlib.util.spec_from_file_location("soak", ROOT / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_soak_smoke_with_a_redis_restart():
    soak = _load_soak()
    summary = soak.run(duration=12, clients=3, fault_names=["redis"], seed=1)
    assert summary["unexpected_errors"] == 0, summary["unexpected_samples"]
    assert summary["gateway_alive_at_end"]
    assert summary["outcomes"].get("ok", 0) > 10
    assert summary["faults"][0]["fault"] == "redis" and summary["faults"][0]["errors"] == 0
    assert summary["outcomes"].get("rejected", 0) == summary["by_kind"].get("poison", 0)
