"""The scripted FakeBackend other tests rely on, and the adapter registry."""

from __future__ import annotations

import json

import pytest

from gateway.backends import registry
from gateway.backends.base import Backend, UpstreamRequest
from gateway.backends.fake import FakeBackend
from gateway.backends.resilience import CircuitBreaker, call_with_retries
from gateway.config.schema import CircuitBreakerConfig, RetryConfig, parse_backend
from gateway.errors import UpstreamError, UpstreamUnavailableError


def req(**body) -> UpstreamRequest:
    return UpstreamRequest("chat", {"model": "auto", "messages": [], **body})


async def test_follows_its_script_then_answers_by_default():
    fake = FakeBackend("local", self_hosted=True).fail(
        UpstreamUnavailableError("down", upstream_status=503), times=2
    )
    fake.reply("scripted", prompt_tokens=4, completion_tokens=2, model="m-x")
    for _ in range(2):
        with pytest.raises(UpstreamUnavailableError):
            await fake.complete(req())
    r = await fake.complete(req())
    assert json.loads(r.body)["choices"][0]["message"]["content"] == "scripted" and r.model == "m-x"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (4, 2)
    r = await fake.complete(req())
    assert json.loads(r.body)["choices"][0]["message"]["content"] == "fake answer"
    assert len(fake.calls) == 4 and isinstance(fake, Backend)


async def test_streams_openai_events_and_fails_mid_stream_on_cue():
    fake = FakeBackend().reply("a b c").fail_mid_stream(after_events=2)
    stream = await fake.open_stream(req(stream=True, stream_options={"include_usage": True}))
    events = [e async for e in stream]
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        == "a b c"
    )
    assert chunks[-1]["choices"] == [] and stream.usage.completion_tokens == 1
    broken = await fake.open_stream(req(stream=True))
    got = []
    with pytest.raises(UpstreamError):
        async for e in broken:
            got.append(e)
    assert len(got) == 2


async def test_works_with_the_retry_loop():
    fake = FakeBackend().fail(UpstreamError("busy", upstream_status=429), times=1)
    breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=5))

    async def no_sleep(_: float) -> None:
        return None

    r = await call_with_retries(
        lambda: fake.complete(req()), RetryConfig(max_attempts=2), breaker, sleep=no_sleep
    )
    assert r.status == 200 and len(fake.calls) == 2


async def test_embeddings_and_probe_and_close():
    fake = FakeBackend(probe_ok=False)
    r = await fake.complete(UpstreamRequest("embeddings", {"model": "e", "input": ["x", "y"]}))
    assert len(json.loads(r.body)["data"]) == 2
    assert await fake.probe() is False
    await fake.close()
    assert fake.closed


def test_registry_builds_by_kind_and_knows_both_kinds():
    assert set(registry.ADAPTERS) == {"openai_compatible", "litellm"}
    cfg = parse_backend(
        {"kind": "openai_compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    )
    b = registry.build_backend("local", cfg)
    assert b.name == "local" and b.kind == "openai_compatible" and b.model == "m"
