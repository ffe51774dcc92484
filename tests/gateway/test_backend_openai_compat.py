"""The OpenAI-compatible adapter against real HTTP upstreams on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
from email.utils import formatdate

import orjson
import pytest
from aiohttp import web

from gateway.backends.base import UpstreamRequest
from gateway.backends.openai_compat import OpenAICompatBackend
from gateway.backends.registry import build_backend
from gateway.config.schema import parse_backend
from gateway.errors import (
    UpstreamConnectTimeoutError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from gateway.sse import json_of
from tests.support.mock_openai import TOOL_CALL_ID, running_mock_openai
from tests.support.servers import MockControl, running

KEY = "sk-test-SECRET-123"


@pytest.fixture(scope="module")
def upstream():
    with running_mock_openai(MockControl(api_key=KEY, models=["m1"])) as (base, control):
        yield base, control


@pytest.fixture
def control(upstream):
    upstream[1].reset()
    return upstream[1]


def make(base: str, **kw) -> OpenAICompatBackend:
    cfg = {
        "kind": "openai_compatible",
        "model": "m1",
        "base_url": base,
        "api_key": "os.environ/K",
    } | kw
    backend = build_backend("up", parse_backend(cfg, {"K": KEY}))
    assert isinstance(backend, OpenAICompatBackend)
    return backend


@pytest.fixture
async def backend(upstream, control):
    b = make(upstream[0], headers={"X-Org": "acme"})
    yield b
    await b.close()


def chat(raw: bytes, **kw) -> UpstreamRequest:
    return UpstreamRequest(operation="chat", body=orjson.loads(raw), raw=raw, **kw)


# ---------------------------------------------------------------- whole answers


async def test_pass_through_sends_the_client_bytes_unchanged(backend, control):
    raw = b'{"model": "m1",  "messages": [{"role": "user", "content": "hello there"}], "x_unknown": {"keep": 1}}'
    resp = await backend.complete(chat(raw, headers={"x-request-id": "r-1"}))
    seen = control.requests[-1]
    assert seen.raw == raw and seen.path == "/v1/chat/completions"
    assert (
        seen.auth_ok and seen.headers["x-org"] == "acme" and seen.headers["x-request-id"] == "r-1"
    )
    assert "authorization" not in seen.headers  # recorded without secrets, but it was checked
    body = orjson.loads(resp.body)
    assert body["choices"][0]["message"]["content"] == "echo: hello there"
    assert resp.model == "m1" and resp.status == 200
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (2, 3)


async def test_only_the_model_is_replaced(backend, control):
    raw = b'{"model":"auto","messages":[{"role":"user","content":"hi"}],"temperature":0,"vendor_flag":true}'
    await backend.complete(chat(raw))
    sent = control.requests[-1].body
    assert sent == {
        "model": "m1",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
        "vendor_flag": True,
    }


async def test_response_bytes_are_relayed_unchanged(upstream, control):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=b'{"id": "x",   "model": "real-model", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 1}}',
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    with running(app) as base:
        b = make(base + "/v1")
        try:
            resp = await b.complete(chat(b'{"model":"m1","messages":[]}'))
        finally:
            await b.close()
    assert resp.body.startswith(b'{"id": "x",   "model"')
    assert resp.model == "real-model" and resp.usage.prompt_tokens == 7


async def test_completions_and_embeddings(backend, control):
    resp = await backend.complete(
        UpstreamRequest("completions", {"model": "m1", "prompt": "say hi"})
    )
    assert orjson.loads(resp.body)["choices"][0]["text"] == "echo: say hi"
    resp = await backend.complete(
        UpstreamRequest("embeddings", {"model": "x", "input": ["a", "b c"]})
    )
    body = orjson.loads(resp.body)
    assert [d["index"] for d in body["data"]] == [0, 1] and len(body["data"][0]["embedding"]) == 8
    assert resp.usage.prompt_tokens == 3
    assert [r.path for r in control.requests] == ["/v1/completions", "/v1/embeddings"]


# ---------------------------------------------------------------- errors


async def test_rate_limit_carries_retry_after_seconds(backend, control):
    control.fail_next(1, 429, retry_after="2")
    with pytest.raises(UpstreamError) as info:
        await backend.complete(chat(b'{"model":"m1","messages":[]}'))
    e = info.value
    assert (
        type(e) is UpstreamError
        and e.upstream_status == 429
        and e.retryable
        and e.retry_after == 2.0
    )
    assert orjson.loads(e.body)["error"]["type"] == "rate_limit_error"


async def test_retry_after_as_http_date(backend, control):
    import time

    control.fail_next(1, 503, retry_after=formatdate(time.time() + 30, usegmt=True))
    with pytest.raises(UpstreamUnavailableError) as info:
        await backend.complete(chat(b'{"model":"m1","messages":[]}'))
    assert 25 <= info.value.retry_after <= 31 and info.value.upstream_status == 503


async def test_status_mapping(backend, control):
    cases = [
        (500, UpstreamError, True),
        (502, UpstreamError, True),
        (504, UpstreamTimeoutError, True),
        (400, UpstreamError, False),
    ]
    for status, cls, retryable in cases:
        control.fail_next(1, status)
        with pytest.raises(UpstreamError) as info:
            await backend.complete(chat(b'{"model":"m1","messages":[]}'))
        assert (
            type(info.value) is cls
            and info.value.upstream_status == status
            and info.value.retryable is retryable
        )


async def test_client_error_body_is_kept_for_relaying(backend, control):
    err = {
        "error": {
            "message": "messages must not be empty",
            "type": "invalid_request_error",
            "param": "messages",
            "code": None,
        }
    }
    control.fail_next(1, 400, body=json.dumps(err).encode())
    with pytest.raises(UpstreamError) as info:
        await backend.complete(chat(b'{"model":"m1","messages":[]}'))
    assert orjson.loads(info.value.body) == err
    assert "messages must not be empty" in info.value.message


async def test_non_json_error_gets_a_clean_message(backend, control):
    control.fail_next(1, 502, body=b"<html><body>Bad   gateway\n from nginx</body></html>")
    with pytest.raises(UpstreamError) as info:
        await backend.complete(chat(b'{"model":"m1","messages":[]}'))
    assert info.value.body is None and "Bad gateway from nginx" in info.value.message


async def test_a_key_echoed_by_the_upstream_never_reaches_the_message(backend, control):
    err = {
        "error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_request_error"}
    }
    control.fail_next(1, 401, body=json.dumps(err).encode())
    with pytest.raises(UpstreamError) as info:
        await backend.complete(chat(b'{"model":"m1","messages":[]}'))
    assert KEY not in info.value.message and "***" in info.value.message
    assert info.value.body is None or KEY.encode() not in info.value.body


async def test_wrong_key_is_401_and_not_retryable(upstream, control):
    b = make(upstream[0])
    b._headers["Authorization"] = "Bearer wrong"  # as if the env held a stale key
    b._session = None
    try:
        with pytest.raises(UpstreamError) as info:
            await b.complete(chat(b'{"model":"m1","messages":[]}'))
    finally:
        await b.close()
    assert info.value.upstream_status == 401 and not info.value.retryable


async def test_connection_refused_is_unavailable_without_status():
    b = make("http://127.0.0.1:9/v1")
    try:
        with pytest.raises(UpstreamUnavailableError) as info:
            await b.complete(chat(b'{"model":"m1","messages":[]}'))
    finally:
        await b.close()
    assert info.value.upstream_status is None and info.value.retryable
    assert KEY not in info.value.message


async def test_dropped_connection_is_unavailable(backend, control):
    control.drop_next()
    with pytest.raises(UpstreamUnavailableError):
        await backend.complete(chat(b'{"model":"m1","messages":[]}'))


async def test_read_timeout_is_not_retried_on_the_same_backend(backend, control):
    """The request reached the upstream, which may still be generating: sending it again
    there doubles the work and the wait (the pipeline tries the next candidate instead)."""
    control.delay_next(1.0)
    with pytest.raises(UpstreamTimeoutError) as info:
        await backend.complete(chat(b'{"model":"m1","messages":[]}', timeout_s=0.2))
    assert info.value.upstream_status is None and not info.value.retryable
    assert not isinstance(info.value, UpstreamConnectTimeoutError)


async def test_connect_timeout_is_retryable():
    """A listener whose accept queue is full drops new SYNs: the connect itself times out."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):  # fill the accept queue (never accepted)
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", port))
                fillers.append(c)
            b = make(f"http://127.0.0.1:{port}/v1", connect_timeout_s=0.3)
            try:
                with pytest.raises(UpstreamConnectTimeoutError) as info:
                    await b.complete(chat(b'{"model":"m1","messages":[]}'))
            finally:
                await b.close()
        finally:
            for c in fillers:
                c.close()
    assert info.value.retryable and info.value.code == "connect_timeout"


# ---------------------------------------------------------------- streaming


async def collect(stream) -> list[bytes]:
    out = []
    try:
        async for e in stream:
            out.append(e)
    finally:
        await stream.aclose()
    return out


def stream_req(body: dict) -> UpstreamRequest:
    raw = orjson.dumps(body)
    return UpstreamRequest("chat", body, raw=raw, stream=True)


async def test_stream_relays_events_and_captures_usage(backend, control):
    req = stream_req(
        {
            "model": "m1",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "one two three"}],
        }
    )
    stream = await backend.open_stream(req)
    events = await collect(stream)
    assert events[-1] == b"data: [DONE]\n\n" and all(e.endswith(b"\n\n") for e in events)
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: one two three"
    assert (
        chunks[-1]["choices"] == []
        and stream.usage.prompt_tokens == 3
        and stream.usage.completion_tokens == 4
    )
    assert stream.model == "m1"


async def test_stream_passes_tool_call_deltas_exactly(backend, control):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    stream = await backend.open_stream(
        stream_req(
            {
                "model": "m1",
                "stream": True,
                "tools": tools,
                "messages": [{"role": "user", "content": "find x"}],
            }
        )
    )
    chunks = [json.loads(e[6:]) for e in (await collect(stream))[:-1]]
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": TOOL_CALL_ID,
        "type": "function",
        "function": {"name": "lookup", "arguments": ""},
    }
    assert "".join(tc["function"]["arguments"] for tc in calls) == '{"echo": "find x"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_stream_failure_before_first_byte_raises_from_open(backend, control):
    control.fail_next(1, 503, retry_after="1")
    with pytest.raises(UpstreamUnavailableError) as info:
        await backend.open_stream(stream_req({"model": "m1", "stream": True, "messages": []}))
    assert info.value.retry_after == 1.0
    control.drop_next()
    with pytest.raises(UpstreamUnavailableError):
        await backend.open_stream(stream_req({"model": "m1", "stream": True, "messages": []}))


async def test_stream_broken_midway_raises_from_the_iterator(backend, control):
    control.break_stream_next(after_events=2)
    stream = await backend.open_stream(
        stream_req(
            {"model": "m1", "stream": True, "messages": [{"role": "user", "content": "a b c d"}]}
        )
    )
    got = []
    with pytest.raises(UpstreamError):
        async for e in stream:
            got.append(e)
    await stream.aclose()
    assert len(got) == 2


# A hand-written SSE upstream: events cut at awkward places, CRLF line ends, comments,
# a mid-stream error event, and a stall between chunks.
SSE_SCRIPTS = {
    "crlf": [
        b": keep-alive\r\n\r\n",
        b'data: {"model":"real","choices":[{"index":0,"delta":{"content":"a"}}]}\r',
        b"\n\r\n",
        b'data: {"choices":[{"index":0,"delta":{"content":"b"}}]}\r\n\r\ndata: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\r\n\r\n',
        b"data: [DONE]\r\n\r\n",
    ],
    "error": [
        b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n',
        b'data: {"error": {"message": "engine died", "type": "server_error"}}\n\n',
    ],
    "no_done": [b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'],
    "garbage": [
        b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n',
        b"data: <html>502 Bad Gateway</html>\n\n",
        b"data: [DONE]\n\n",
    ],
    "garbage_first": [b"data: hello\n\n", b"data: [DONE]\n\n"],
    "truncated_json": [b'data: {"choices":[{"index":0,"delta":\n\n', b"data: [DONE]\n\n"],
    "json_array": [b"data: [1, 2]\n\n", b"data: [DONE]\n\n"],
    "two_lines": [
        b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"a"}}]}\n\n',
        b"data: [DONE]\n\n",
    ],
    "stall": [
        b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n',
        None,
        b"data: [DONE]\n\n",
    ],
    "spaced_usage": [
        b'data: {"choices":[{"index":0,"delta":{"content":"a"}}],"usage":null}\n\n',
        b'data: {"choices": [], "usage" : {"prompt_tokens": 7, "completion_tokens": 1}}\n\n',
        b"data: [DONE]\n\n",
    ],
}


@pytest.fixture(scope="module")
def sse_upstream():
    async def handler(request: web.Request) -> web.StreamResponse:
        script = SSE_SCRIPTS[(await request.json())["model"]]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for part in script:
            if part is None:
                await asyncio.sleep(1.0)
                continue
            for i in range(0, len(part), 7):  # 7-byte writes: events split across reads
                await resp.write(part[i : i + 7])
                await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    with running(app) as base:
        yield base + "/v1"


async def test_sse_parsing_is_robust_to_chunk_boundaries_and_crlf(sse_upstream):
    b = make(sse_upstream, model="crlf")
    try:
        stream = await b.open_stream(stream_req({"model": "crlf", "stream": True, "messages": []}))
        events = await collect(stream)
    finally:
        await b.close()
    assert events == [
        b'data: {"model":"real","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"content":"b"}}]}\n\n',
        b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n',
        b"data: [DONE]\n\n",
    ]
    assert stream.model == "real" and (
        stream.usage.prompt_tokens,
        stream.usage.completion_tokens,
    ) == (5, 2)


@pytest.mark.parametrize(
    "script, error",
    [
        ("error", "engine died"),
        ("no_done", "without \\[DONE\\]"),
        ("garbage", "malformed stream event"),
    ],
)
async def test_stream_error_event_or_early_end_raises(sse_upstream, script, error):
    b = make(sse_upstream, model=script)
    try:
        stream = await b.open_stream(stream_req({"model": script, "stream": True, "messages": []}))
        with pytest.raises(UpstreamError, match=error):
            await collect(stream)
    finally:
        await b.close()


@pytest.mark.parametrize("script", ["garbage_first", "truncated_json", "json_array"])
async def test_a_malformed_first_event_fails_the_open(sse_upstream, script):
    """Before the first byte: open_stream raises, so the pipeline can still fall back."""
    b = make(sse_upstream, model=script)
    try:
        with pytest.raises(UpstreamError, match="malformed stream event"):
            await b.open_stream(stream_req({"model": script, "stream": True, "messages": []}))
    finally:
        await b.close()


async def test_one_event_in_several_data_lines_is_accepted(sse_upstream):
    b = make(sse_upstream, model="two_lines")
    try:
        stream = await b.open_stream(
            stream_req({"model": "two_lines", "stream": True, "messages": []})
        )
        events = await collect(stream)
    finally:
        await b.close()
    assert len(events) == 2 and events[-1] == b"data: [DONE]\n\n"


async def test_stall_between_chunks_times_out(sse_upstream):
    b = make(sse_upstream, model="stall")
    try:
        stream = await b.open_stream(
            UpstreamRequest(
                "chat",
                {"model": "stall", "stream": True, "messages": []},
                stream=True,
                timeout_s=0.3,
            )
        )
        with pytest.raises(UpstreamTimeoutError):
            await collect(stream)
    finally:
        await b.close()


# ---------------------------------------------------------------- probe and lifecycle


async def test_probe(backend):
    assert await backend.probe() is True
    dead = make("http://127.0.0.1:9/v1")
    assert await dead.probe() is False
    await dead.close()


async def test_connections_are_pooled_and_closed(backend, control):
    for _ in range(5):
        await backend.complete(chat(b'{"model":"m1","messages":[]}'))
    session = backend._session
    assert session is not None and not session.closed
    idle = [c for conns in session.connector._conns.values() for c in conns]
    assert len(idle) == 1  # one keep-alive connection, reused five times
    await backend.close()
    assert session.closed


async def test_upstream_cookies_are_never_replayed():
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        body = {
            "id": "x",
            "object": "chat.completion",
            "model": "m1",
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        }
        resp = web.json_response(body)
        resp.set_cookie("session", "belongs-to-the-first-client")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    with running(app) as base:
        b = make(base + "/v1", api_key=None)
        try:
            raw = orjson.dumps({"model": "m1", "messages": [{"role": "user", "content": "hi"}]})
            await b.complete(chat(raw))
            await b.complete(chat(raw))
        finally:
            await b.close()
    assert seen == [None, None]


@pytest.mark.parametrize("script", ["crlf", "two_lines", "spaced_usage"])
async def test_stream_hands_on_each_events_data_parsed_once(sse_upstream, script):
    """``last_json`` is the data of the event just yielded (what json_of reads from its
    bytes; None for [DONE]), so the pipeline need not parse it again; usage is read from it
    however the upstream spaces its JSON."""
    b = make(sse_upstream, model=script)
    seen = []
    try:
        stream = await b.open_stream(stream_req({"model": script, "stream": True, "messages": []}))
        async for event in stream:
            seen.append((event, stream.last_json))
    finally:
        await b.close()
    assert seen[-1] == (b"data: [DONE]\n\n", None)
    for event, obj in seen[:-1]:
        assert obj == json_of(event) and isinstance(obj, dict)
    if script == "two_lines":  # two data lines joined by a newline, as the SSE spec says
        assert seen[0][1] == {"choices": [{"index": 0, "delta": {"content": "a"}}]}
    if script == "spaced_usage":
        assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (7, 1)
