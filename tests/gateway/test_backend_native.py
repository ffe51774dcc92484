"""The native adapter (gateway.backends.native) against scripted loopback upstreams.

What the SDK tests (test_protocols_native.py) cannot make the mocks do: streams that break the
protocol (an ``error`` event, no last event, data-only events ended by ``[DONE]``, CRLF line
ends), and the config rules for ``native_protocols``.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from pydantic import ValidationError

from gateway.backends.base import UpstreamRequest
from gateway.backends.native import endpoints_for
from gateway.config.schema import parse_backend
from gateway.errors import UpstreamError, UpstreamTimeoutError, UpstreamUnavailableError
from tests.support.servers import running

SECRET = "sk-native-unit-SECRET"


def _scripted(body: bytes, seen: list[web.Request] | None = None) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        if seen is not None:
            seen.append(request)
            await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(body)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/messages", handler)
    app.router.add_post("/v1/responses", handler)
    return app


def _ev(name: str | None, data: dict, end: str = "\n") -> bytes:
    head = f"event: {name}{end}" if name else ""
    return f"{head}data: {json.dumps(data)}{end}{end}".encode()


def _request(protocol: str) -> UpstreamRequest:
    body = {"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}
    return UpstreamRequest("chat", body, stream=True, protocol=protocol)  # type: ignore[arg-type]


async def _drain(ep, req: UpstreamRequest, events: list[bytes] | None = None):
    """(the events relayed, one per item: an item holds what one read brought; the stream)."""
    stream = await ep.open_stream(req)
    events = [] if events is None else events
    try:
        async for e in stream:
            events += [x + b"\n\n" for x in e.split(b"\n\n") if x]
    finally:
        await stream.aclose()
    assert stream.relayed == len(events)
    return events, stream


def _claude(base: str):
    cfg = parse_backend(
        {"kind": "litellm", "model": "anthropic/claude-x", "base_url": base, "api_key": SECRET},
        allow_literal_secrets=True,
    )
    return endpoints_for("claude", cfg, SECRET)["anthropic"]


def _gpt(base: str):
    cfg = parse_backend(
        {
            "kind": "openai_compatible",
            "model": "gpt-x",
            "base_url": base + "/v1",
            "native_protocols": ["responses"],
        }
    )
    return endpoints_for("gpt", cfg, None)["responses"]


def test_anthropic_error_event_mid_stream_raises_without_the_key():
    body = (
        _ev(
            "message_start",
            {
                "type": "message_start",
                "message": {"model": "claude-x", "usage": {"input_tokens": 3}},
            },
        )
        + _ev("ping", {"type": "ping"})
        + _ev(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": f"busy {SECRET}"}},
        )
    )
    seen: list[web.Request] = []
    with running(_scripted(body, seen)) as base:
        ep = _claude(base)
        got: list[bytes] = []
        with pytest.raises(UpstreamError) as e:
            asyncio.run(_drain(ep, _request("anthropic"), got))
    assert "busy" in e.value.message and SECRET not in e.value.message
    # what came before the error (read in the same piece as it) went out first
    assert [x.split(b"\n", 1)[0] for x in got] == [b"event: message_start", b"event: ping"]
    [req] = seen
    assert req.path == "/v1/messages" and req.headers["x-api-key"] == SECRET
    assert req.headers["anthropic-version"]  # the default, since the caller sent none


def test_anthropic_usage_from_both_events_and_crlf_line_ends():
    body = b"".join(
        [
            _ev(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "model": "claude-x-2025",
                        "usage": {
                            "input_tokens": 5,
                            "cache_read_input_tokens": 100,
                            "cache_creation_input_tokens": 20,
                            "output_tokens": 1,
                        },
                    },
                },
                end="\r\n",
            ),
            b": a comment the relay drops\r\n\r\n",
            _ev("ping", {"type": "ping"}, end="\r\n"),
            _ev("message_delta", {"type": "message_delta", "usage": {"output_tokens": 42}}),
            _ev("message_stop", {"type": "message_stop"}),
            _ev("ping", {"type": "ping"}),  # after the last event: not read
        ]
    )
    with running(_scripted(body)) as base:
        events, stream = asyncio.run(_drain(_claude(base), _request("anthropic")))
    assert [e.split(b"\n", 1)[0] for e in events] == [
        b"event: message_start",
        b"event: ping",
        b"event: message_delta",
        b"event: message_stop",
    ]
    u = stream.usage
    assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens) == (125, 42, 100)
    assert stream.model == "claude-x-2025" and stream.protocol == "anthropic"


def test_responses_data_only_events_ended_by_done():
    done = {
        "id": "resp_1",
        "model": "gpt-x",
        "output": [{"type": "reasoning", "id": "rs_1", "summary": []}],
        "usage": {"input_tokens": 4, "output_tokens": 6, "input_tokens_details": {}},
    }
    body = (
        _ev(None, {"type": "response.created", "response": {**done, "usage": None}})
        + _ev(None, {"type": "response.completed", "response": done})
        + b"data: [DONE]\n\n"
    )
    with running(_scripted(body)) as base:
        events, stream = asyncio.run(_drain(_gpt(base), _request("responses")))
    assert len(events) == 2 and b"[DONE]" not in b"".join(events)
    assert stream.answer == done and stream.usage.completion_tokens == 6


def test_responses_stream_without_its_last_event_is_a_failure():
    body = _ev("response.created", {"type": "response.created", "response": {"id": "r"}})
    with running(_scripted(body)) as base:
        with pytest.raises(UpstreamError, match="before its last event"):
            asyncio.run(_drain(_gpt(base), _request("responses")))


def _paced(parts: list[bytes | float | None], ended: list[str]) -> web.Application:
    """Writes each part as its own chunk: a float waits that long, None cuts the connection.
    ``ended`` gets how the handler ended: "done", "cut", or "gone" (the client closed)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for part in parts:
                if part is None:
                    ended.append("cut")
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                if isinstance(part, float):
                    await asyncio.sleep(part)
                else:
                    await resp.write(part)
            await resp.write_eof()
        except ConnectionResetError:
            ended.append("gone")
            return resp
        ended.append("done")
        return resp

    app = web.Application()
    app.router.add_post("/v1/messages", handler)
    app.router.add_post("/v1/responses", handler)
    return app


START = _ev("message_start", {"type": "message_start", "message": {"model": "claude-x"}})
PING = _ev("ping", {"type": "ping"})


@pytest.mark.parametrize(
    "protocol, parts",
    [("anthropic", [b": keep-alive\n\n"]), ("responses", [b"data: [DONE]\n\n"]), ("anthropic", [])],
)
def test_a_stream_over_before_its_first_event_fails_the_open(protocol, parts):
    """Before the first byte: open_stream raises, so the pipeline can still fall back."""
    ended: list[str] = []
    with running(_paced(parts, ended)) as base:
        ep = _claude(base) if protocol == "anthropic" else _gpt(base)
        with pytest.raises(UpstreamError, match="closed the stream before the first event"):
            asyncio.run(_drain(ep, _request(protocol)))
    assert ended == ["done"]


def test_a_stall_between_events_times_out():
    ended: list[str] = []
    stop = _ev("message_stop", {"type": "message_stop"})
    with running(_paced([START, 1.0, stop], ended)) as base:
        req = _request("anthropic")
        req.timeout_s = 0.3  # the limit on the wait between two chunks
        got: list[bytes] = []
        with pytest.raises(UpstreamTimeoutError, match="timed out while streaming"):
            asyncio.run(_drain(_claude(base), req, got))
    assert got == [START]


def test_a_connection_cut_mid_stream_is_unavailable_without_the_key():
    ended: list[str] = []
    # the pause before the cut: PING is read before the reset arrives, even on a loaded machine
    with running(_paced([START, 0.05, PING, 0.2, None], ended)) as base:
        got: list[bytes] = []
        with pytest.raises(UpstreamUnavailableError, match="unreachable while streaming") as e:
            asyncio.run(_drain(_claude(base), _request("anthropic"), got))
    assert got == [START, PING] and ended == ["cut"]
    assert SECRET not in e.value.message and SECRET not in str(e.value.detail)


def test_a_stream_left_before_its_end_closes_the_upstream_connection():
    """A caller gone mid-stream: aclose() drops the connection (unread data cannot go back to
    the pool), which the upstream notices at its next write."""
    ended: list[str] = []
    with running(_paced([START, *[0.05, PING] * 100], ended)) as base:

        async def leave_early() -> list[str]:
            ep = _claude(base)
            stream = await ep.open_stream(_request("anthropic"))
            async for _ in stream:
                break
            await stream.aclose()
            for _ in range(100):  # the upstream's next write fails within ~0.05 s
                if ended:
                    break
                await asyncio.sleep(0.05)
            seen = list(ended)  # before the session closes (which would close it anyway)
            await ep.close()
            return seen

        assert asyncio.run(leave_early()) == ["gone"]


def test_native_protocols_config():
    def natives(**kw):
        return parse_backend(kw).natives

    assert natives(kind="litellm", model="anthropic/claude-x") == {"anthropic"}  # implied
    assert natives(kind="litellm", model="anthropic/claude-x", native_protocols=[]) == set()
    assert natives(kind="litellm", model="gemini/gemini-pro") == set()
    assert natives(kind="openai_compatible", base_url="http://h/v1", model="m") == set()
    assert natives(
        kind="openai_compatible", base_url="http://h/v1", model="m", native_protocols=["responses"]
    ) == {"responses"}
    for bad in (
        {"kind": "openai_compatible", "base_url": "http://h/v1", "native_protocols": ["anthropic"]},
        {"kind": "litellm", "model": "gemini/gemini-pro", "native_protocols": ["anthropic"]},
        {"kind": "litellm", "model": "anthropic/claude-x", "native_protocols": ["responses"]},
    ):
        with pytest.raises(ValidationError, match="native_protocols"):
            parse_backend({"model": "m", **bad})


def test_gateway_check_shows_which_backends_take_callers_natively():
    from pathlib import Path

    from gateway.config.explain import explain
    from gateway.config.loader import load_policy

    shipped = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"
    out = explain(load_policy(shipped, {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"}))
    native, backend = {}, None
    for line in out.split("backends:")[1].split("\n\n")[0].splitlines():
        if line[:3].strip() and not line[2:3].isspace():  # "  <name> <kind> ..."
            backend = line.split()[0]
        elif line.strip().startswith("native:"):
            native[backend] = line.split(":", 1)[1].strip()
    # gpt-4o refuses Codex's `reasoning`: the shipped policy keeps Responses callers translated
    assert native == {"anthropic": "anthropic"}


def test_gateway_check_says_when_reasoning_requests_are_translated(tmp_path):
    from gateway.config.explain import explain
    from gateway.config.loader import load_policy

    path = tmp_path / "p.yaml"
    path.write_text(
        """
backends:
  gpt4o: {kind: openai_compatible, base_url: "http://127.0.0.1:9/v1", model: gpt-4o,
          native_protocols: [responses]}
  gpt5: {kind: openai_compatible, base_url: "http://127.0.0.1:9/v1", model: gpt-5-mini,
         native_protocols: [responses]}
models:
  auto: {route: [gpt4o, gpt5]}
"""
    )
    out = explain(load_policy(path, {}))
    lines = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("native:")]
    assert lines == [
        "native: responses (asking for reasoning or thinking: translated, the model does not reason)",
        "native: responses",
    ]


def test_a_conversation_stored_in_chat_form_only_stays_translated():
    """A record from before native pass-through (no items): continuing it natively would drop
    its start, so the codec says "translate", and the answer's record keeps the chain so."""
    from gateway.protocols.codecs import ResponsesCodec, response_key
    from gateway.state.memory import MemoryState

    codec = ResponsesCodec(MemoryState())
    old = {"response": {"id": "resp_old"}, "messages": [{"role": "user", "content": "tea"}]}

    async def scenario():
        await codec.state.put_blob(response_key("t", "resp_old"), json.dumps(old).encode(), 60)
        body = {"model": "auto", "input": "and cake", "previous_response_id": "resp_old"}
        req = await codec.decode(body, json.dumps(body).encode(), "t")
        assert codec.native_body(req) is None  # translated
        await codec.answered(req, {"id": "resp_new", "output": []}, "t")
        new = await codec.load("t", "resp_new")
        assert "items" not in new and len(new["messages"]) == 3
        fresh = {"model": "auto", "input": "hello"}  # a new conversation: items from the start
        req = await codec.decode(fresh, json.dumps(fresh).encode(), "t")
        assert codec.native_body(req) == (fresh, json.dumps(fresh).encode())
        await codec.answered(req, {"id": "resp_2", "output": []}, "t")
        assert (await codec.load("t", "resp_2"))["items"] == [{"role": "user", "content": "hello"}]

    asyncio.run(scenario())
