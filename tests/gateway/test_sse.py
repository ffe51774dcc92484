from __future__ import annotations

import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.cache import StreamAssembler, completion_to_sse

USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}

TEXT_ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "qwen2.5-0.5b",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": USAGE,
}

TOOL_ANSWER = {
    "id": "chatcmpl-2",
    "object": "chat.completion",
    "created": 1700000001,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"tz":"CET"}'},
                    },
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": USAGE,
}


def payloads(events: list[bytes]) -> list[dict]:
    assert events[-1] == b"data: [DONE]\n\n"
    out = []
    for e in events[:-1]:
        assert e.startswith(b"data: ") and e.endswith(b"\n\n") and e.count(b"\n\n") == 1
        out.append(orjson.loads(e[6:]))
    return out


def sdk_accumulate(events: list[bytes]) -> ChatCompletion:
    """What the official openai SDK makes of our events."""
    state = ChatCompletionStreamState()
    for p in payloads(events):
        state.handle_chunk(ChatCompletionChunk.model_validate(p))
    return state.get_final_completion()


def test_text_answer_replays_as_chunks_the_sdk_understands():
    events = completion_to_sse(orjson.dumps(TEXT_ANSWER), include_usage=False)
    chunks = payloads(events)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-1" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)
    final = sdk_accumulate(events)
    assert final.choices[0].message.content == "Hello there!"
    assert final.choices[0].finish_reason == "stop"
    assert final.model == "qwen2.5-0.5b" and final.system_fingerprint == "fp_1"


def test_include_usage_adds_a_final_usage_chunk():
    chunks = payloads(completion_to_sse(orjson.dumps(TEXT_ANSWER), include_usage=True))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE
    assert all(c["usage"] is None for c in chunks[:-1])
    assert (
        sdk_accumulate(completion_to_sse(orjson.dumps(TEXT_ANSWER), True)).usage.total_tokens == 19
    )


def test_tool_calls_replay_with_ids_names_and_arguments():
    events = completion_to_sse(orjson.dumps(TOOL_ANSWER), include_usage=False)
    deltas = [c["choices"][0]["delta"] for c in payloads(events)]
    firsts = [
        d["tool_calls"][0] for d in deltas if "tool_calls" in d and "id" in d["tool_calls"][0]
    ]
    assert [(t["index"], t["id"], t["function"]["name"]) for t in firsts] == [
        (0, "call_a", "get_weather"),
        (1, "call_b", "get_time"),
    ]
    msg = sdk_accumulate(events).choices[0].message
    assert [(t.id, t.function.name, t.function.arguments) for t in msg.tool_calls] == [
        ("call_a", "get_weather", '{"city":"Paris"}'),
        ("call_b", "get_time", '{"tz":"CET"}'),
    ]
    assert sdk_accumulate(events).choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("answer", [TEXT_ANSWER, TOOL_ANSWER], ids=["text", "tools"])
@pytest.mark.parametrize("include_usage", [True, False])
def test_whole_to_stream_to_whole_round_trip(answer, include_usage):
    asm = StreamAssembler()
    for e in completion_to_sse(orjson.dumps(answer), include_usage):
        asm.feed(e)
    back = orjson.loads(asm.result())
    expected = dict(answer)
    if not include_usage:
        expected = {k: v for k, v in answer.items() if k != "usage"}
    assert back == expected
    ChatCompletion.model_validate(back)


def chunk(delta=None, finish=None, index=0, **extra):
    c = {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 5,
        "model": "m",
        "choices": [
            {"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
        ],
    }
    c.update(extra)
    return b"data: " + orjson.dumps(c) + b"\n\n"


def test_assembler_merges_a_real_shaped_stream():
    events = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "The "}),
        chunk({"content": "answer"}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}),
        chunk({}, finish="tool_calls"),
        b'data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":5,"model":"m","choices":[],"usage":'
        + orjson.dumps(USAGE)
        + b"}\n\n",
        b"data: [DONE]\n\n",
    ]
    asm = StreamAssembler()
    for e in events:
        asm.feed(e)
    whole = ChatCompletion.model_validate(orjson.loads(asm.result()))
    m = whole.choices[0].message
    assert m.content == "The answer"
    assert m.tool_calls[0].id == "call_1" and m.tool_calls[0].function.arguments == '{"q":"x"}'
    assert whole.choices[0].finish_reason == "tool_calls" and whole.usage.completion_tokens == 7
    # the same events, delivered glued together in one read, give the same answer
    glued = StreamAssembler()
    glued.feed(b"".join(events))
    assert glued.result() == asm.result()


def test_assembler_keeps_choices_apart():
    asm = StreamAssembler()
    for e in [
        chunk({"content": "a"}, index=0),
        chunk({"content": "b"}, index=1),
        chunk({"content": "c"}, index=0),
        chunk({}, "stop", index=1),
        chunk({}, "length", index=0),
    ]:
        asm.feed(e)
    doc = orjson.loads(asm.result())
    assert [(c["message"]["content"], c["finish_reason"]) for c in doc["choices"]] == [
        ("ac", "length"),
        ("b", "stop"),
    ]


@pytest.mark.parametrize(
    "events",
    [
        [],
        [chunk({"content": "cut off"})],  # no finish_reason: the stream broke
        [chunk({"content": "x"}), b'data: {"error": {"message": "boom"}}\n\n', chunk({}, "stop")],
        [chunk({"content": "x"}), b"data: {not json\n\n", chunk({}, "stop")],
    ],
    ids=["empty", "unfinished", "error-event", "garbage"],
)
def test_assembler_refuses_incomplete_or_failed_streams(events):
    asm = StreamAssembler()
    for e in events:
        asm.feed(e)
    assert asm.result() is None


def test_assembler_ignores_comments_and_keepalives():
    asm = StreamAssembler()
    for e in [b": keep-alive\n\n", chunk({"content": "ok"}), b"\n\n", chunk({}, "stop")]:
        asm.feed(e)
    assert orjson.loads(asm.result())["choices"][0]["message"]["content"] == "ok"


def test_text_completion_round_trip():
    answer = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 3,
        "model": "m",
        "choices": [{"index": 0, "text": "four", "logprobs": None, "finish_reason": "length"}],
        "usage": USAGE,
    }
    events = completion_to_sse(orjson.dumps(answer), include_usage=True)
    chunks = payloads(events)
    assert all(c["object"] == "text_completion" for c in chunks)
    assert [c["choices"][0]["text"] for c in chunks[:-1]] == ["four", ""]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, "length"]
    asm = StreamAssembler()
    for e in events:
        asm.feed(e)
    assert orjson.loads(asm.result()) == answer
    Completion.model_validate(orjson.loads(asm.result()))


def test_non_completions_cannot_be_replayed():
    with pytest.raises(ValueError):
        completion_to_sse(b'{"object":"list","data":[]}', False)
    with pytest.raises(ValueError):
        completion_to_sse(b"not json", False)
