"""The report as plain JSON-able data (``--json``), for dashboards and diffs between runs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from gateway.simulate.aggregate import Report

__all__ = ["report_dict"]


def report_dict(rep: Report) -> dict[str, Any]:
    out = asdict(rep)
    for g in out["by_backend"] + out["by_rule"]:
        g["tokens"] = g["prompt_tokens"] + g["completion_tokens"]
    out["savings_usd"] = rep.savings_usd
    out["savings_share"] = rep.savings_share
    out["per_month"] = {
        "baseline_usd": rep.per_month(rep.baseline_usd),
        "cost_usd": rep.per_month(rep.cost_usd),
        "savings_usd": rep.per_month(rep.savings_usd),
    }
    return out
