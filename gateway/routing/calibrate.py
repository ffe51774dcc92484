"""Derive a difficulty threshold from a sample of prompts (RouteLLM-style calibration).

``escalate_share: 0.2`` in a model's ``difficulty`` block means: the threshold above which
20% of a typical prompt mix would be escalated. The built-in sample
(``calibration_prompts.jsonl``, 200 prompts: 110 open-ended AlpacaEval instructions and 30 each
of ARC-Challenge, MBPP and Winogrande from ../shared/data/routing) stands in for "typical";
operators should point ``calibration_sample`` at prompts from their own traffic.
"""

from __future__ import annotations

from importlib import resources

from gateway.errors import PolicyError
from gateway.jsonl import iter_json_objects, read_lines
from gateway.routing.calibration import threshold_for_share
from gateway.routing.scorer import DifficultyScorer

__all__ = ["calibrate_share", "load_sample"]


def load_sample(path: str | None) -> list[list[dict]]:
    """Prompts as chat messages; each JSONL line is {"prompt": str} or {"messages": [...]}."""
    if path is None:
        lines = (
            resources.files("gateway.routing")
            .joinpath("calibration_prompts.jsonl")
            .read_bytes()
            .splitlines()
        )
        source = "built-in calibration sample"
    else:
        lines, source = read_lines(path, PolicyError, "calibration_sample"), path
    out: list[list[dict]] = []
    for n, row in iter_json_objects(lines, source, PolicyError):
        if isinstance(row.get("messages"), list):
            out.append(row["messages"])
        elif isinstance(row.get("prompt"), str):
            out.append([{"role": "user", "content": row["prompt"]}])
        else:
            raise PolicyError(f"{source}:{n}: expected a 'prompt' string or a 'messages' array")
    if not out:
        raise PolicyError(f"{source}: no prompts")
    return out


def calibrate_share(scorer: DifficultyScorer, share: float, sample_path: str | None) -> float:
    scores = scorer.score_batch(load_sample(sample_path))
    return threshold_for_share(scores, share)
