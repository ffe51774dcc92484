"""The stream encoders of the Messages and Responses codecs, event by event.

Chat chunks in (as an OpenAI-compatible upstream sends them), the caller's events out: the
exact event sequence, the ``sequence_number`` order, and the bytes themselves (every event is
``event: <type>\\ndata: <compact JSON>\\n\\n``, the form ``sse.named_event`` writes, whether
an encoder builds it from a dict or from pre-encoded pieces). Last, through the real gateway:
a stream cut by ``server.request_timeout_s`` ends with an error event numbered after the
events already sent.
"""

from __future__ import annotations

import re
import uuid

import httpx
import orjson
import pytest

from gateway.errors import UpstreamError, UpstreamTimeoutError
from gateway.protocols.anthropic import AnthropicStream
from gateway.protocols.responses import ResponsesStream
from gateway.sse import named_event
from tests.gateway.gateway_server import running_gateway
from tests.support.mock_openai import running_mock_openai
from tests.support.policy import NO_RETRY, client_key, local_backend, policy_yaml

BODY = {"model": "auto", "input": "hi", "metadata": {"app": "t"}, "temperature": 0.5}
# text that exercises the JSON string escapes
TRICKY = ['He said "hi"\\', "\n\ttab\u2028", "é 😀 </script>", "\x00\x1f"]


def _chunk(delta=None, finish=None, index=0, usage=None, cid="chatcmpl-abc"):
    out = {"id": cid, "object": "chat.completion.chunk", "created": 1, "model": "m"}
    if delta is None and finish is None:
        out["choices"] = []
    else:
        out["choices"] = [{"index": index, "delta": delta or {}, "finish_reason": finish}]
    if usage is not None:
        out["usage"] = usage
    return out


def _call(i, args, call_id=None, name=None):
    tc: dict = {"index": i, "function": {"arguments": args}}
    if call_id:
        tc["id"], tc["type"] = call_id, "function"
        tc["function"]["name"] = name
    return {"tool_calls": [tc]}


USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 4}}


def _run(enc, chunks, end="finish"):
    """Every chunk through ``enc``; returns the events as (name, data) and checks their bytes."""
    raw = b"".join(b"".join(enc.feed(c)) for c in chunks)
    raw += b"".join(enc.finish() if end == "finish" else enc.error(end))
    events = []
    for block in raw.split(b"\n\n")[:-1]:
        head, data = block.split(b"\n", 1)
        assert head.startswith(b"event: ") and data.startswith(b"data: "), block
        name, obj = head[7:].decode(), orjson.loads(data[6:])
        # the canonical bytes: compact orjson, fields in order, exactly one event per block
        assert block + b"\n\n" == named_event(name, obj), block
        assert obj["type"] == name
        events.append((name, obj))
    return events


def _numbered(events):
    """Responses events carry 0, 1, 2 ... in the order they are sent."""
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    return [name for name, _ in events]


# ---------------------------------------------------------------- Responses


def test_responses_text_stream_exact_sequence():
    chunks = [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hel"}),
        *(_chunk({"content": t}) for t in TRICKY),
        _chunk({}, finish="stop"),
        _chunk(usage=USAGE),
    ]
    events = _run(ResponsesStream(BODY, "resp_1", "auto"), chunks)
    assert _numbered(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 5,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    created, in_progress = events[0][1]["response"], events[1][1]["response"]
    assert created == in_progress
    assert created["id"] == "resp_1" and created["status"] == "in_progress"
    assert created["output"] == [] and created["usage"] is None
    assert created["metadata"] == {"app": "t"} and created["temperature"] == 0.5
    added = events[2][1]
    mid = added["item"]["id"]
    assert re.fullmatch(r"msg_[0-9a-f]{32}", mid)
    assert added == {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {
            "type": "message",
            "id": mid,
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        },
        "sequence_number": 2,
    }
    deltas = [d for name, d in events if name == "response.output_text.delta"]
    assert [d["delta"] for d in deltas] == ["Hel", *TRICKY]
    assert all(
        d["item_id"] == mid and d["output_index"] == 0 and d["content_index"] == 0 for d in deltas
    )
    text = "Hel" + "".join(TRICKY)
    assert events[9][1]["text"] == text
    assert events[10][1]["part"] == {"type": "output_text", "text": text, "annotations": []}
    final = events[-1][1]["response"]
    assert final["status"] == "completed" and final["output"] == [events[11][1]["item"]]
    assert final["output"][0]["content"][0]["text"] == text
    assert final["usage"] == {
        "input_tokens": 11,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 18,
    }


def test_responses_text_then_two_tool_calls():
    chunks = [
        _chunk({"role": "assistant", "content": "Let me look."}),
        _chunk(_call(0, "", "call_a", "get_weather")),
        _chunk(_call(0, '{"city":')),
        _chunk(_call(1, '{"q":"x"}', "call_b", "search")),
        _chunk(_call(0, '"Paris"}')),
        _chunk({}, finish="tool_calls"),
    ]
    enc = ResponsesStream(BODY, "resp_2", "auto")
    events = _run(enc, chunks)
    assert _numbered(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",  # the message
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",  # the first call closes the message
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",  # call_a, output 1
        "response.function_call_arguments.delta",
        "response.output_item.added",  # call_b, output 2
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",  # call_a again
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    a, b = events[8][1]["item"], events[10][1]["item"]
    assert (a["call_id"], a["name"], events[8][1]["output_index"]) == ("call_a", "get_weather", 1)
    assert (b["call_id"], b["name"], events[10][1]["output_index"]) == ("call_b", "search", 2)
    args = [
        (d["item_id"], d["output_index"], d.get("delta")) for n, d in events if "arguments" in n
    ]
    assert args == [
        (a["id"], 1, '{"city":'),
        (b["id"], 2, '{"q":"x"}'),
        (a["id"], 1, '"Paris"}'),
        (a["id"], 1, None),
        (b["id"], 2, None),
    ]
    assert events[13][1]["arguments"] == '{"city":"Paris"}'
    assert events[15][1]["arguments"] == '{"q":"x"}'
    out = events[-1][1]["response"]["output"]
    assert [it["type"] for it in out] == ["message", "function_call", "function_call"]
    assert out[1]["arguments"] == '{"city":"Paris"}' and out[1]["status"] == "completed"
    assert enc.response["output"] == out  # what ``store`` keeps


def test_responses_length_is_incomplete_and_empty_stream_still_completes():
    events = _run(
        ResponsesStream(BODY, "r", "auto"), [_chunk({"content": "a"}), _chunk({}, "length")]
    )
    assert events[-1][0] == "response.incomplete"
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    events = _run(ResponsesStream(BODY, "r", "auto"), [])
    assert _numbered(events) == ["response.created", "response.in_progress", "response.completed"]


def test_responses_ignores_other_choices_and_reads_usage_anywhere():
    chunks = [
        _chunk({"content": "zero"}),
        _chunk({"content": "one"}, index=1),
        _chunk({"content": "!"}, usage={"prompt_tokens": 2, "completion_tokens": 3}),
    ]
    events = _run(ResponsesStream(BODY, "r", "auto"), chunks)
    assert [d["delta"] for n, d in events if n.endswith(".delta")] == ["zero", "!"]
    assert events[-1][1]["response"]["usage"]["total_tokens"] == 5


@pytest.mark.parametrize(
    "exc",
    [UpstreamError("backend 'local' stream broke"), UpstreamTimeoutError("took too long")],
)
def test_responses_error_event_continues_the_sequence(exc):
    enc = ResponsesStream(BODY, "r", "auto")
    events = _run(enc, [_chunk({"content": "a"}), _chunk({"content": "b"})], end=exc)
    assert _numbered(events)[-1] == "error" and len(events) == 7
    assert events[-1][1] == {
        "type": "error",
        "code": exc.code,
        "message": exc.message,
        "param": None,
        "sequence_number": 6,
    }


# ---------------------------------------------------------------- Anthropic Messages


def test_messages_stream_exact_sequence_text_and_tools():
    chunks = [
        _chunk({"role": "assistant", "content": ""}),
        *(_chunk({"content": t}) for t in ["Hi ", *TRICKY]),
        _chunk(_call(0, "", "call_a", "get_weather")),
        _chunk(_call(0, '{"city":')),
        _chunk(_call(0, '"Paris"}')),
        _chunk({}, finish="tool_calls"),
        _chunk(usage=USAGE),
    ]
    events = _run(AnthropicStream("auto", 42), chunks)
    assert [n for n, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0][1]["message"] == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "auto",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 42, "output_tokens": 0},
    }
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    texts = [d["delta"] for n, d in events[3:8]]
    assert texts == [{"type": "text_delta", "text": t} for t in ["Hi ", *TRICKY]]
    assert all(d["index"] == 0 for _, d in events[3:9])
    assert events[9][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_a",
        "name": "get_weather",
        "input": {},
    }
    assert [d["delta"] for _, d in events[10:12]] == [
        {"type": "input_json_delta", "partial_json": '{"city":'},
        {"type": "input_json_delta", "partial_json": '"Paris"}'},
    ]
    assert all(d["index"] == 1 for _, d in events[9:13])
    assert events[13][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 7, "output_tokens": 7, "cache_read_input_tokens": 4},
    }


def test_messages_error_event_is_anthropic_shaped():
    events = _run(AnthropicStream("auto", 1), [_chunk({"content": "a"})], end=UpstreamError("x"))
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "x"}},
    )


# ---------------------------------------------------------------- through the gateway

KEY = "gw-stream-key-ECHO"


def _policy(local: str, ns: str) -> str:
    return policy_yaml(
        auth={"keys": [client_key("alpha", "KEY", "alpha")]},
        server={"request_timeout_s": 3},
        cache={"enabled": False, "namespace": ns},
        backends={"local": local_backend(local, retry=NO_RETRY)},
        models={"auto": {"rules": [{"name": "everyday", "route": "local"}]}},
    )


def _events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.split("\n\n"):
        if block.strip():
            head, data = block.split("\n", 1)
            out.append((head.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return out


def test_request_timeout_mid_stream_error_event_continues_the_sequence(tmp_path):
    """The upstream goes silent after 4 chunks; server.request_timeout_s (3 s) ends the
    stream with an ``error`` event numbered after the events already sent (not from 0)."""
    with running_mock_openai() as (local, ctl):
        path = tmp_path / "policy.yaml"
        path.write_text(_policy(local, f"streams-{uuid.uuid4().hex[:8]}"))
        with running_gateway(path, {"KEY": KEY}) as (url, _app):
            for route, body in (
                ("/v1/responses", {"model": "auto", "input": "a b c d e", "store": False}),
                (
                    "/v1/messages",
                    {
                        "model": "auto",
                        "max_tokens": 16,
                        "messages": [{"role": "user", "content": "a b"}],
                    },
                ),
            ):
                ctl.stall_stream_next(after_events=4)  # role, "echo:", " a", " b"
                with httpx.stream(
                    "POST",
                    url + route,
                    json={**body, "stream": True},
                    headers={"x-api-key": KEY},
                    timeout=30,
                ) as r:
                    text = r.read().decode()
                assert r.status_code == 200, text
                events = _events(text)
                name, err = events[-1]
                assert name == "error", text
                if route == "/v1/responses":
                    names = _numbered(events)
                    assert names.count("response.output_text.delta") == 3  # "echo:", " a", " b"
                    assert err["sequence_number"] == len(events) - 1 == 7
                    assert err["code"] == "timeout"
                    assert "response.completed" not in names
                else:
                    assert err["error"]["message"].startswith("the request took longer")
                    assert "message_stop" not in [n for n, _ in events]


def test_responses_long_stream_keeps_numbering():
    """Past the pre-encoded event ends (512): the numbers go on, one per event."""
    chunks = [_chunk({"content": f"w{i} "}) for i in range(600)]
    events = _run(ResponsesStream(BODY, "r", "auto"), chunks)
    names = _numbered(events)
    assert len(names) == 2 + 2 + 600 + 3 + 1
    final = events[-1][1]["response"]["output"][0]["content"][0]["text"]
    assert final == "".join(f"w{i} " for i in range(600))
