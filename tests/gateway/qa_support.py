"""Shared pieces of the QA suites (tests/gateway/test_qa_*.py): a small policy over loopback
mocks, and the checks every answer must pass (OpenAI error shape, no secret, no traceback)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

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

POLICY = """
auth:
  keys:
    - {{name: alpha, key: os.environ/CLIENT_KEY, team: alpha{key_rpm}}}
server: {{max_body_bytes: {max_body}, request_timeout_s: {request_timeout}}}
cache: {{enabled: {cache_on}, {redis}namespace: "{ns}", ttl_s: 60}}
backends:
  local:
    kind: openai_compatible
    base_url: {local}
    model: qwen-local
    self_hosted: true
    capabilities: {{context_window: 4096, vision: false, tools: true, json_schema: false}}
    retry: {{max_attempts: {attempts}, backoff_base_s: 0.001, backoff_max_s: 0.002}}
    circuit_breaker: {{failure_threshold: {breaker}, cooldown_s: 60}}
    timeout_s: 5
  openai:
    kind: openai_compatible
    base_url: {openai}
    model: gpt-4o
    api_key: os.environ/OPENAI_API_KEY
    capabilities: {{context_window: 128000, vision: true, tools: true, json_schema: true}}
    retry: {{max_attempts: {attempts}, backoff_base_s: 0.001, backoff_max_s: 0.002}}
    circuit_breaker: {{failure_threshold: {breaker}, cooldown_s: 60}}
    timeout_s: 5
  embed:
    kind: openai_compatible
    base_url: {local}
    model: embed-local
    self_hosted: true
    capabilities: {{embeddings: true, chat: false}}
    circuit_breaker: {{failure_threshold: {breaker}, cooldown_s: 60}}
models:
  auto:
    difficulty: {{scorer: heuristic, threshold: 0.6}}
    fallbacks: [openai]
    embeddings: [embed]
    rules:
      - name: confidential
        when: {{headers: {{x-data-classification: confidential}}, metadata: {{tier: [gold, silver]}}}}
        route: local
        self_hosted_only: true
      - {{name: vision, when: {{needs: [vision]}}, route: [openai]}}
      - {{name: hard, when: {{difficulty: hard}}, route: [openai]}}
      - {{name: everyday, route: local}}
"""


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
) -> Path:
    path.write_text(
        POLICY.format(
            local=local,
            openai=openai,
            ns=f"qa-{uuid.uuid4().hex[:12]}",
            redis=f'redis_url: "{redis_url}", ' if redis_url else "",
            cache_on="true" if cache else "false",
            attempts=attempts,
            breaker=breaker,
            max_body=max_body,
            request_timeout=request_timeout,
            key_rpm=f", rpm: {key_rpm}" if key_rpm else "",
        )
    )
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
