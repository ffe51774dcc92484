"""The litellm adapter doing real translation to a loopback server speaking Anthropic's Messages API."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from gateway.backends.base import UpstreamRequest
from gateway.backends.litellm_backend import LiteLLMBackend
from gateway.backends.registry import build_backend
from gateway.config.schema import parse_backend
from gateway.errors import UpstreamError, UpstreamTimeoutError, UpstreamUnavailableError
from tests.support.mock_anthropic import TOOL_USE_ID, running_mock_anthropic
from tests.support.servers import MockControl

KEY = "sk-ant-test-SECRET-456"
MODEL = "anthropic/claude-sonnet-4-5"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture(scope="module")
def upstream():
    with running_mock_anthropic(MockControl(api_key=KEY)) as (base, control):
        yield base, control


@pytest.fixture
def control(upstream):
    upstream[1].reset()
    return upstream[1]


def make(base: str, **kw) -> LiteLLMBackend:
    cfg = {
        "kind": "litellm",
        "model": MODEL,
        "base_url": base,
        "api_key": "os.environ/K",
        "timeout_s": 5,
    } | kw
    backend = build_backend("claude", parse_backend(cfg, {"K": KEY}))
    assert isinstance(backend, LiteLLMBackend)
    return backend


@pytest.fixture
def backend(upstream, control):
    return make(upstream[0])


def chat(**body) -> UpstreamRequest:
    return UpstreamRequest("chat", {"model": "auto", **body})


# ---------------------------------------------------------------- whole answers


async def test_chat_is_translated_both_ways(backend, control):
    resp = await backend.complete(
        chat(
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello you"},
            ],
            max_tokens=50,
            temperature=0,
            seed=7,
            metadata={"classification": "public"},
            x_vendor="dropped",
        )
    )
    body = orjson.loads(resp.body)
    assert (
        body["object"] == "chat.completion" and body["model"] == "claude-sonnet-4-5" == resp.model
    )
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: hello you"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (4, 3)
    seen = control.requests[-1]
    assert seen.path == "/v1/messages" and seen.auth_ok and seen.headers["anthropic-version"]
    sent = seen.body
    assert (
        sent["model"] == "claude-sonnet-4-5"
        and sent["max_tokens"] == 50
        and sent["temperature"] == 0
    )
    assert "be brief" in json.dumps(sent["system"]) and sent["messages"][0]["role"] == "user"
    assert (
        not any(k.startswith("_") for k in sent) and "seed" not in sent and "x_vendor" not in sent
    )
    assert "classification" not in json.dumps(sent)  # gateway metadata stays in the gateway


async def test_tool_calls_keep_ids_names_and_arguments(backend, control):
    resp = await backend.complete(
        chat(messages=[{"role": "user", "content": "Paris"}], tools=TOOLS, tool_choice="auto")
    )
    choice = orjson.loads(resp.body)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {
            "id": TOOL_USE_ID,
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"echo": "Paris"}'},
        }
    ]
    sent = control.requests[-1].body
    assert (
        sent["tools"][0]["name"] == "get_weather"
        and sent["tools"][0]["input_schema"]["type"] == "object"
    )


async def test_tool_result_round_trip(backend, control):
    messages = [
        {"role": "user", "content": "Paris"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": TOOL_USE_ID,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": TOOL_USE_ID, "content": "sunny"},
    ]
    await backend.complete(chat(messages=messages, tools=TOOLS, max_tokens=20))
    sent = control.requests[-1].body["messages"]
    blocks = [b for m in sent for b in (m["content"] if isinstance(m["content"], list) else [])]
    assert {
        "type": "tool_use",
        "id": TOOL_USE_ID,
        "name": "get_weather",
        "input": {"city": "Paris"},
    }.items() <= next(b for b in blocks if b["type"] == "tool_use").items()
    assert next(b for b in blocks if b["type"] == "tool_result")["tool_use_id"] == TOOL_USE_ID


# ---------------------------------------------------------------- streaming


async def collect(stream) -> list[bytes]:
    out = []
    try:
        async for e in stream:
            out.append(e)
    finally:
        await stream.aclose()
    return out


@pytest.mark.parametrize("client_usage", [True, False])
async def test_stream_text(backend, control, client_usage):
    req = chat(
        messages=[{"role": "user", "content": "one two"}],
        stream=True,
        max_tokens=30,
        stream_options={"include_usage": client_usage},
    )
    stream = await backend.open_stream(req)
    events = await collect(stream)
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all(
        c["object"] == "chat.completion.chunk" and c["model"] == "claude-sonnet-4-5" for c in chunks
    )
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: one two"
    finishes = [
        c["choices"][0]["finish_reason"]
        for c in chunks
        if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    assert finishes == ["stop"]
    usage_chunks = [c for c in chunks if "usage" in c]
    if client_usage:
        assert usage_chunks == [chunks[-1]] and chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["completion_tokens"] == 3
    else:
        assert usage_chunks == []
    assert (
        stream.usage is not None and stream.usage.completion_tokens == 3
    )  # captured for cost either way
    assert control.requests[-1].body["stream"] is True


async def test_stream_tool_call_deltas(backend, control):
    stream = await backend.open_stream(
        chat(messages=[{"role": "user", "content": "Rome"}], tools=TOOLS, stream=True)
    )
    chunks = [json.loads(e[6:]) for e in (await collect(stream))[:-1]]
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": TOOL_USE_ID,
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(
        set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"}
        for tc in calls[1:]
    )
    assert json.loads("".join(tc["function"]["arguments"] for tc in calls)) == {"echo": "Rome"}
    assert [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]
    ] == ["tool_calls"]


async def test_stream_error_before_first_byte_raises_from_open(backend, control):
    control.fail_next(1, 429, retry_after="3")
    with pytest.raises(UpstreamError) as info:
        await backend.open_stream(chat(messages=[{"role": "user", "content": "x"}], stream=True))
    assert (
        info.value.upstream_status == 429 and info.value.retry_after == 3.0 and info.value.retryable
    )


async def test_stream_broken_midway_raises_from_the_iterator(backend, control):
    control.break_stream_next(after_events=4)  # message_start, ping, block start, first delta
    stream = await backend.open_stream(
        chat(messages=[{"role": "user", "content": "a b c d e"}], stream=True)
    )
    with pytest.raises(UpstreamError):
        await collect(stream)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "status, cls, retryable",
    [
        (429, UpstreamError, True),
        (500, UpstreamError, True),
        (529, UpstreamError, True),
        (503, UpstreamUnavailableError, True),
        (401, UpstreamError, False),
        (404, UpstreamError, False),
    ],
)
async def test_error_mapping(backend, control, status, cls, retryable):
    control.fail_next(1, status, retry_after="2")
    with pytest.raises(UpstreamError) as info:
        await backend.complete(chat(messages=[{"role": "user", "content": "x"}]))
    e = info.value
    assert isinstance(e, cls) and e.retryable is retryable
    assert f"mock failure {status}" in e.message and "litellm" not in e.message.lower()
    assert e.retry_after == 2.0
    assert isinstance(e.__cause__, Exception)  # mapped at the edge, cause kept


async def test_bad_request_carries_an_openai_shaped_body(backend, control):
    control.fail_next(1, 400)
    with pytest.raises(UpstreamError) as info:
        await backend.complete(chat(messages=[{"role": "user", "content": "x"}]))
    assert info.value.upstream_status == 400 and not info.value.retryable
    assert orjson.loads(info.value.body) == {
        "error": {
            "message": "mock failure 400",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


async def test_wrong_key_never_appears_in_the_error_or_logs(upstream, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    b = make(upstream[0])
    b._common["api_key"] = "sk-ant-WRONG-789"
    with pytest.raises(UpstreamError) as info:
        await b.complete(chat(messages=[{"role": "user", "content": "x"}]))
    stream = await make(upstream[0]).open_stream(
        chat(messages=[{"role": "user", "content": "x"}], stream=True)
    )
    await collect(stream)
    assert info.value.upstream_status == 401
    assert "WRONG" not in info.value.message and KEY not in info.value.message
    out = capsys.readouterr()
    for text in (caplog.text, out.out, out.err):
        assert "WRONG" not in text and KEY not in text


async def test_connection_refused_and_dropped_are_unavailable(backend, control):
    dead = make("http://127.0.0.1:9")
    with pytest.raises(UpstreamUnavailableError) as info:
        await dead.complete(chat(messages=[{"role": "user", "content": "x"}]))
    assert info.value.upstream_status is None and info.value.retryable
    control.drop_next()
    with pytest.raises(UpstreamUnavailableError):
        await backend.complete(chat(messages=[{"role": "user", "content": "x"}]))


async def test_timeout(backend, control):
    control.delay_next(2.0)
    with pytest.raises(UpstreamTimeoutError) as info:
        await backend.complete(
            UpstreamRequest(
                "chat",
                {"model": "auto", "messages": [{"role": "user", "content": "x"}]},
                timeout_s=0.3,
            )
        )
    assert info.value.upstream_status is None


async def test_probe_connects_to_the_api_base(backend):
    assert await backend.probe() is True
    assert await make("http://127.0.0.1:9").probe() is False


async def test_litellm_does_not_retry_on_its_own(backend, control):
    control.fail_next(1, 500)
    with pytest.raises(UpstreamError):
        await backend.complete(chat(messages=[{"role": "user", "content": "x"}]))
    assert len(control.requests) == 1


# ---------------------------------------------------------------- no network but the api_base


NO_NETWORK_SCRIPT = textwrap.dedent("""
    import asyncio, json, socket, sys
    hosts = []
    real = socket.getaddrinfo
    def spy(host, *a, **k):
        hosts.append(host if isinstance(host, str) else host.decode())
        return real(host, *a, **k)
    socket.getaddrinfo = spy
    real_connect = socket.socket.connect
    def connect(self, address):
        hosts.append(address[0] if isinstance(address, tuple) else str(address))
        return real_connect(self, address)
    socket.socket.connect = connect

    from gateway.backends.base import UpstreamRequest
    from gateway.backends.registry import build_backend
    from gateway.config.schema import parse_backend

    base, key = sys.argv[1], sys.argv[2]
    cfg = parse_backend(
        {"kind": "litellm", "model": "anthropic/claude-sonnet-4-5", "base_url": base, "api_key": "os.environ/K"},
        {"K": key})
    backend = build_backend("claude", cfg)
    async def main():
        r = await backend.complete(UpstreamRequest("chat", {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}))
        s = await backend.open_stream(UpstreamRequest("chat", {"model": "auto", "stream": True, "tools": %s,
                                                              "messages": [{"role": "user", "content": "hi"}]}))
        async for _ in s:
            pass
        await s.aclose()
        return json.loads(r.body)["choices"][0]["message"]["content"]
    print(json.dumps({"content": asyncio.run(main()), "hosts": sorted(set(hosts))}))
""") % json.dumps(TOOLS)


def test_litellm_reaches_nothing_but_the_configured_api_base(upstream):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LITELLM", "ANTHROPIC", "OPENAI"))
    }
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = str(root)
    out = subprocess.run(
        [sys.executable, "-c", NO_NETWORK_SCRIPT, upstream[0], KEY],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["content"] == "echo: hi"
    assert "127.0.0.1" in result["hosts"] and set(result["hosts"]) <= {"127.0.0.1"}, result["hosts"]
    assert "cost map" not in out.stderr.lower()


# ---------------------------------------------------------------- other operations


async def test_text_completion_through_anthropic(backend, control):
    resp = await backend.complete(
        UpstreamRequest("completions", {"model": "auto", "prompt": "say hi", "max_tokens": 20})
    )
    body = orjson.loads(resp.body)
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "echo: say hi"
    assert resp.usage is not None and resp.usage.completion_tokens == 3
    assert control.requests[-1].path == "/v1/messages"


async def test_embeddings_through_litellm():
    from tests.support.mock_openai import running_mock_openai

    with running_mock_openai(MockControl(api_key=KEY)) as (base, ctl):
        b = make(base, model="openai/text-embedding-3-small")
        resp = await b.complete(
            UpstreamRequest(
                "embeddings", {"model": "auto", "input": ["a b", "c"], "metadata": {"x": 1}}
            )
        )
    body = orjson.loads(resp.body)
    assert body["object"] == "list" and [d["index"] for d in body["data"]] == [0, 1]
    assert len(body["data"][0]["embedding"]) == 8 and resp.usage.prompt_tokens == 3
    sent = ctl.requests[-1]
    assert (
        sent.path == "/v1/embeddings"
        and sent.auth_ok
        and sent.body["input"] == ["a b", "c"]
        and "metadata" not in sent.body
    )
