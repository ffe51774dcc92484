"""JSONL formats of `gateway router train` and `gateway router score`.

Training file, one JSON object per line:
    {"prompt": "text" | [OpenAI chat messages], "label": 1}
        label: 1/true = the self-hosted model's answer was clearly worse (strong model needed),
               0/false = it was good enough; a number in [0, 1] is read as a probability.
    {"prompt": ..., "weak_score": 6.5, "strong_score": 9.0}
        outcomes of the self-hosted (weak) and strong model on any one scale (a 1-10 judge
        grade, 0/1 correctness, ...): label = 1 when weak_score < strong_score.
    Optional: "weight" (>= 0, default 1), "source" (a group name such as the app or dataset;
    sources are balanced and get their own base rate during training).
    "messages" is accepted as a synonym of "prompt". Blank lines are skipped.

Scoring input: {"id": any JSON value, "prompt": "text" | [messages]} per line;
output: {"id": same, "score": float in [0, 1]} per line, higher = needs the strong model more.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.jsonl import iter_json_objects, read_lines
from gateway.router.errors import TrainingDataError


@dataclass(frozen=True, slots=True)
class TrainingRow:
    messages: list[dict[str, Any]]
    target: float
    weight: float
    source: str


def _lines(path: Path) -> Iterator[tuple[int, dict]]:
    return iter_json_objects(
        read_lines(path, TrainingDataError, "data file"), str(path), TrainingDataError
    )


def to_messages(value: Any, where: str) -> list[dict[str, Any]]:
    """A prompt as chat messages: a string becomes one user turn."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(m, dict) and "role" in m for m in value)
    ):
        return value
    raise TrainingDataError(
        f"{where}: 'prompt' must be a string or a non-empty list of chat messages"
    )


def _number(obj: dict, key: str, where: str) -> float:
    v = obj[key]
    if isinstance(v, bool):
        return float(v)
    if not isinstance(v, int | float):
        raise TrainingDataError(f"{where}: {key!r} must be a number, got {type(v).__name__}")
    return float(v)


def read_training(path: Path) -> list[TrainingRow]:
    rows: list[TrainingRow] = []
    for no, obj in _lines(path):
        where = f"{path}:{no}"
        prompt = obj.get("prompt", obj.get("messages"))
        if prompt is None:
            raise TrainingDataError(f"{where}: missing 'prompt'")
        if "label" in obj:
            target = _number(obj, "label", where)
            if not 0.0 <= target <= 1.0:
                raise TrainingDataError(f"{where}: 'label' must be 0/1 or a probability in [0, 1]")
        elif "weak_score" in obj and "strong_score" in obj:
            target = float(_number(obj, "weak_score", where) < _number(obj, "strong_score", where))
        else:
            raise TrainingDataError(f"{where}: need 'label', or 'weak_score' and 'strong_score'")
        weight = _number(obj, "weight", where) if "weight" in obj else 1.0
        if weight < 0:
            raise TrainingDataError(f"{where}: 'weight' must be >= 0")
        rows.append(
            TrainingRow(
                to_messages(prompt, where), target, weight, str(obj.get("source", "default"))
            )
        )
    if not rows:
        raise TrainingDataError(f"{path}: no training rows")
    return rows


def read_scoring(path: Path) -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    for no, obj in _lines(path):
        where = f"{path}:{no}"
        if "id" not in obj:
            raise TrainingDataError(f"{where}: missing 'id'")
        prompt = obj.get("prompt", obj.get("messages"))
        if prompt is None:
            raise TrainingDataError(f"{where}: missing 'prompt'")
        yield obj["id"], to_messages(prompt, where)
