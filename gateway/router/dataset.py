"""JSONL formats of `gateway router train` and `gateway router score`.

Training file, one JSON object per line, each with a "prompt" ("text" or [OpenAI chat
messages]) and one or more of these label kinds (see gateway.router.labels):
    "label": 1
        1/true = the self-hosted model's answer was clearly worse (strong model needed),
        0/false = it was good enough; a number in [0, 1] is read as a probability.
    "weak_score": 6.5, "strong_score": 9.0
        outcomes of the self-hosted (weak) and strong model on any one scale (a 1-10 judge
        grade, 0/1 correctness, ...): label = 1 when weak_score < strong_score.
    "outcomes": {"my-7b": 1, "llama-3-8b": 0, "gpt-4o": 1}
        per-model correctness in [0, 1] (1 = right / good enough), any models, any number;
        each model gets its own ability, every outcome informs the prompt's difficulty.
    "strong_preferred": 0.8, "model": "my-7b"
        a judge's preference between the strong model's answer and ``model``'s (default
        "self-hosted"): the probability that the strong answer was preferred, in [0, 1].
    Optional: "weight" (>= 0, default 1), "source" (a group name such as the app or dataset;
    sources are balanced and get their own base rates during training).
    "messages" is accepted as a synonym of "prompt". Blank lines are skipped.

Scoring input: {"id": any JSON value, "prompt": "text" | [messages]} per line;
output: {"id": same, "score": float in [0, 1]} per line, higher = needs the strong model more.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.jsonl import iter_json_objects, read_lines
from gateway.router.errors import TrainingDataError
from gateway.router.labels import LabelledPrompt, Observation


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


def _unit(obj: dict, key: str, where: str) -> float:
    v = _number(obj, key, where)
    if not 0.0 <= v <= 1.0:
        raise TrainingDataError(f"{where}: {key!r} must be 0/1 or a probability in [0, 1]")
    return v


def observations(obj: dict, where: str) -> tuple[Observation, ...]:
    """Every label kind on one line, as observations (see the module docstring)."""
    obs: list[Observation] = []
    if "label" in obj:
        obs.append(Observation("needs_strong", _unit(obj, "label", where)))
    if "weak_score" in obj and "strong_score" in obj:
        weak, strong = _number(obj, "weak_score", where), _number(obj, "strong_score", where)
        obs.append(Observation("needs_strong", float(weak < strong)))
    if "outcomes" in obj:
        outcomes = obj["outcomes"]
        if not isinstance(outcomes, dict) or not outcomes:
            raise TrainingDataError(f"{where}: 'outcomes' must be an object of model -> score")
        for model, _ in outcomes.items():
            score = _unit(outcomes, model, f"{where}: outcomes")
            obs.append(Observation(f"fails:{model}", 1.0 - score))
    if "strong_preferred" in obj:
        model = obj.get("model", "self-hosted")
        if not isinstance(model, str):
            raise TrainingDataError(f"{where}: 'model' must be a string")
        obs.append(Observation(f"loses_to_strong:{model}", _unit(obj, "strong_preferred", where)))
    if not obs:
        raise TrainingDataError(
            f"{where}: need 'label', 'weak_score' and 'strong_score', 'outcomes' or "
            "'strong_preferred'"
        )
    return tuple(obs)


def read_training(path: Path) -> list[LabelledPrompt]:
    rows: list[LabelledPrompt] = []
    for no, obj in _lines(path):
        where = f"{path}:{no}"
        prompt = obj.get("prompt", obj.get("messages"))
        if prompt is None:
            raise TrainingDataError(f"{where}: missing 'prompt'")
        obs = observations(obj, where)
        weight = _number(obj, "weight", where) if "weight" in obj else 1.0
        if weight < 0:
            raise TrainingDataError(f"{where}: 'weight' must be >= 0")
        source = str(obj.get("source", "default"))
        rows.append(LabelledPrompt(to_messages(prompt, where), source, obs, weight))
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
