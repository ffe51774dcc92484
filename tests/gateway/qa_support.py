"""Shared pieces of the QA suites (tests/gateway/test_qa_*.py): a small policy over loopback
mocks, and the checks every answer must pass (OpenAI error shape, no secret, no traceback)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.support.policy import client_key, local_backend, openai_backend, policy_yaml

CLIENT_KEY = "qa-client-key-DELTA"
OPENAI_KEY = "sk-qa-upstream-openai-SECRET"
SECRETS = (CLIENT_KEY, OPENAI_KEY)
ENV = {"CLIENT_KEY": CLIENT_KEY, "OPENAI_API_KEY": OPENAI_KEY}
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
ALLOWED_STATUSES = frozenset({200, 400, 401, 404, 413, 422, 429, 502, 503, 504})
PATHS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}

RULES = [
    {
        "name": "confidential",
        "when": {
            "headers": {"x-data-classification": "confidential"},
            "metadata": {"tier": ["gold", "silver"]},
        },
        "route": "local",
        "self_hosted_only": True,
    },
    {"name": "vision", "when": {"needs": ["vision"]}, "route": ["openai"]},
    {"name": "hard", "when": {"difficulty": "hard"}, "route": ["openai"]},
    {"name": "everyday", "route": "local"},
]


def write_policy(
    path: Path,
    local: str,
    openai: str,
    *,
    redis_url: str | None = None,
    cache: bool = True,
    attempts: int = 1,
    breaker: int = 1000,
    max_body: int = 200_000,
    request_timeout: float = 30,
    key_rpm: int | None = None,
    server: Mapping[str, Any] | None = None,
) -> Path:
    """The QA policy: a local backend, OpenAI, a local embedder; ``server`` adds server fields."""
    retry = {"max_attempts": attempts, "backoff_base_s": 0.001, "backoff_max_s": 0.002}
    breaker_cfg = {"failure_threshold": breaker, "cooldown_s": 60}
    caps = {"context_window": 4096, "vision": False, "tools": True, "json_schema": False}
    big_caps = {"context_window": 128000, "vision": True, "tools": True, "json_schema": True}
    cache_cfg = {"enabled": cache, "namespace": f"qa-{uuid.uuid4().hex[:12]}", "ttl_s": 60}
    if redis_url:
        cache_cfg["redis_url"] = redis_url
    text = policy_yaml(
        auth={"keys": [client_key("alpha", "CLIENT_KEY", "alpha", rpm=key_rpm or None)]},
        server={"max_body_bytes": max_body, "request_timeout_s": request_timeout, **(server or {})},
        cache=cache_cfg,
        backends={
            "local": local_backend(
                local, capabilities=caps, retry=retry, circuit_breaker=breaker_cfg, timeout_s=5
            ),
            "openai": openai_backend(
                openai, capabilities=big_caps, retry=retry, circuit_breaker=breaker_cfg, timeout_s=5
            ),
            "embed": local_backend(
                local,
                model="embed-local",
                capabilities={"embeddings": True, "chat": False},
                circuit_breaker=breaker_cfg,
            ),
        },
        models={
            "auto": {
                "difficulty": {"scorer": "heuristic", "threshold": 0.6},
                "fallbacks": ["openai"],
                "embeddings": ["embed"],
                "rules": RULES,
            }
        },
    )
    path.write_text(text)
    return path


def check_error_body(r: httpx.Response) -> dict:
    """A non-200 answer is OpenAI's error JSON with the four fields of the right types."""
    assert r.headers.get("content-type", "").startswith("application/json"), (
        r.status_code,
        r.headers,
    )
    payload = r.json()
    assert set(payload) == {"error"}, payload
    err = payload["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert err["param"] is None or isinstance(err["param"], str)
    assert err["code"] is None or isinstance(err["code"], str)
    return err


def check_no_leak(text: str) -> None:
    assert "Traceback" not in text
    for secret in SECRETS:
        assert secret not in text


def valid_chat(text: str = "hello") -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total
