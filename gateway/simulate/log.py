"""Reading a request log: JSONL, one OpenAI request per line.

A line is either a bare request body (``{"model": ..., "messages": [...]}``) or a wrapper::

    {"request": {...body...},
     "headers": {"x-data-classification": "confidential"},   # optional, names case-insensitive
     "team": "research", "key_name": "ci-bot",                # optional
     "operation": "chat",                                     # optional: chat | completions | embeddings
     "usage": {"prompt_tokens": 812, "completion_tokens": 240},  # optional, the real counts (*)
     "timestamp": "2025-05-01T09:30:00Z",                     # optional, ISO 8601 or epoch seconds
     "label": {"strong_needed": 1}}                           # optional; or {"weak_score": 0.2, "strong_score": 0.9}

(*) as a chat completion's usage reports them: prompt tokens read from the provider's prompt
cache in ``prompt_tokens_details.cached_tokens``, those written to it in
``cache_creation_input_tokens`` (Anthropic's, as litellm passes it on); both are part of
``prompt_tokens`` and are priced at the cache prices, as in ``gateway serve``.

Without ``operation`` it is read from the body: ``messages`` is chat, ``prompt`` completions,
``input`` embeddings. Bad lines raise ``LogError`` naming the file and line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.jsonl import iter_json_objects, read_lines

__all__ = ["Label", "LogError", "LoggedRequest", "read_log", "parse_line"]

OPERATIONS = ("chat", "completions", "embeddings")
WRAPPER_KEYS = frozenset(
    {"request", "headers", "team", "key_name", "operation", "usage", "timestamp", "label", "id"}
)
EPOCH_MS_ABOVE = 1e11  # epoch numbers larger than this are milliseconds


class LogError(ValueError):
    """A request log that cannot be read (names the file and line)."""


@dataclass(slots=True, frozen=True)
class Label:
    """How good each side's answer was, in [0, 1]: the weak (self-hosted) and strong model's."""

    weak: float
    strong: float


@dataclass(slots=True)
class LoggedRequest:
    line: int
    operation: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    team: str = "default"
    key_name: str | None = None
    prompt_tokens: int | None = None  # from the log's usage, when present
    completion_tokens: int | None = None
    cached_tokens: int = 0  # of prompt_tokens: read from the provider's prompt cache
    cache_write_tokens: int = 0  # of prompt_tokens: written to it
    timestamp: float | None = None  # epoch seconds
    label: Label | None = None


def _operation(body: dict[str, Any], given: Any) -> str:
    if given is not None:
        if given not in OPERATIONS:
            raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}, got {given!r}")
        return given
    if "messages" in body:
        return "chat"
    if "prompt" in body:
        return "completions"
    if "input" in body:
        return "embeddings"
    raise ValueError("the request body has no messages, prompt or input")


def _timestamp(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        raise ValueError("timestamp must be ISO 8601 text or epoch seconds")
    if isinstance(v, int | float):
        if not math.isfinite(v):
            raise ValueError("timestamp is not a finite number")
        return v / 1000.0 if v > EPOCH_MS_ABOVE else float(v)
    if isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"timestamp {v!r} is not ISO 8601") from None
        return dt.timestamp()
    raise ValueError("timestamp must be ISO 8601 text or epoch seconds")


def _count(usage: dict[str, Any], name: str, where: str = "usage") -> int | None:
    v = usage.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{where}.{name} must be a non-negative integer")
    return v


def _score(label: dict[str, Any], name: str) -> float:
    v = label.get(name)
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
        raise ValueError(f"label.{name} must be a number in [0, 1]")
    return float(v)


def _label(v: Any) -> Label | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise ValueError(
            'label must be {"strong_needed": 0/1} or {"weak_score": x, "strong_score": y}'
        )
    if "strong_needed" in v:
        need = v["strong_needed"]
        if need not in (0, 1):  # True/False compare equal to 1/0
            raise ValueError("label.strong_needed must be 0 or 1")
        # The strong model is assumed good; the weak one is good unless the strong one was needed.
        return Label(weak=0.0 if need else 1.0, strong=1.0)
    if "weak_score" in v or "strong_score" in v:
        return Label(weak=_score(v, "weak_score"), strong=_score(v, "strong_score"))
    raise ValueError("label must hold strong_needed, or weak_score and strong_score")


def parse_line(obj: Any, line: int) -> LoggedRequest:
    """One decoded JSON line -> a LoggedRequest (ValueError on bad content)."""
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    wrapped = isinstance(obj.get("request"), dict)
    body = obj["request"] if wrapped else obj
    meta = obj if wrapped else {}
    if wrapped:
        unknown = set(obj) - WRAPPER_KEYS
        if unknown:
            raise ValueError(f"unknown field(s) next to request: {', '.join(sorted(unknown))}")
    headers = meta.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(x, str) for x in headers.values()):
        raise ValueError("headers must be an object of strings")
    usage = meta.get("usage") or {}
    if not isinstance(usage, dict):
        raise ValueError("usage must be an object")
    details = usage.get("prompt_tokens_details") or {}
    if not isinstance(details, dict):
        raise ValueError("usage.prompt_tokens_details must be an object")
    team = meta.get("team", "default")
    if not isinstance(team, str):
        raise ValueError("team must be a string")
    key_name = meta.get("key_name")
    if key_name is not None and not isinstance(key_name, str):
        raise ValueError("key_name must be a string")
    return LoggedRequest(
        line=line,
        operation=_operation(body, meta.get("operation")),
        body=body,
        headers={k.lower(): x for k, x in headers.items()},
        team=team,
        key_name=key_name,
        prompt_tokens=_count(usage, "prompt_tokens"),
        completion_tokens=_count(usage, "completion_tokens"),
        cached_tokens=_count(details, "cached_tokens", "usage.prompt_tokens_details") or 0,
        cache_write_tokens=_count(usage, "cache_creation_input_tokens") or 0,
        timestamp=_timestamp(meta.get("timestamp")),
        label=_label(meta.get("label")),
    )


def iter_log(path: str | Path) -> Iterator[LoggedRequest]:
    """Request-log lines, and shadow records (gateway.shadow) as labelled requests: the
    records without prompt text cannot be replayed and are skipped."""
    from gateway.shadow.export import is_record, to_log_line

    p = Path(path)
    for n, obj in iter_json_objects(read_lines(p, LogError, "request log"), str(p), LogError):
        if is_record(obj):
            line = to_log_line(obj)
            if line is None:
                continue
            obj = line
        try:
            yield parse_line(obj, n)
        except ValueError as exc:
            raise LogError(f"{p}:{n}: {exc}") from None


def read_log(path: str | Path) -> list[LoggedRequest]:
    """Every request of the log, in file order. Raises LogError on the first bad line."""
    out = list(iter_log(path))
    if not out:
        raise LogError(f"request log {path} holds no requests")
    return out
