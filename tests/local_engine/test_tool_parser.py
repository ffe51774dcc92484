"""Hermes tool-call parsing, whole and streamed (every split of the text must give the same calls)."""

from __future__ import annotations

import json

import pytest

from local_engine.server.tool_parser import StreamingToolParser, parse_tool_calls

ONE_CALL = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par\\"is", "n": [1, {"a": "}"}]}}\n</tool_call>'
TWO_CALLS = (
    '<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
    '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>'
)


def test_parse_plain_text_is_content():
    assert parse_tool_calls("just text < tool_call") == ("just text < tool_call", [])


def test_parse_one_call_with_content():
    content, calls = parse_tool_calls(ONE_CALL)
    assert content == "Let me check.\n"
    assert [c.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].arguments) == {"city": 'Par"is', "n": [1, {"a": "}"}]}
    out = calls[0].to_openai()
    assert out["type"] == "function" and out["id"].startswith("call_")


def test_parse_two_calls_and_unterminated_call():
    content, calls = parse_tool_calls(TWO_CALLS)
    assert content is None
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("a", {"x": 1}), ("b", {})]
    assert len({c.id for c in calls}) == 2
    _, calls = parse_tool_calls('<tool_call>{"name": "a", "arguments": {"x": 1}}')
    assert [c.name for c in calls] == ["a"]


def test_parse_invalid_json_stays_content():
    text = '<tool_call>{"name": "a", "arguments": {"x": </tool_call>'
    assert parse_tool_calls(text) == (text, [])


def _stream(text: str, pieces: list[int]):
    parser = StreamingToolParser()
    content, deltas, pos = "", [], 0
    for n in pieces + [len(text)]:
        c, d = parser.feed(text[pos : pos + n])
        content, deltas, pos = content + c, deltas + d, pos + n
    c, d = parser.finish()
    return content + c, deltas + d


def _calls_from_deltas(deltas):
    calls: dict[int, dict] = {}
    for d in deltas:
        out = d.to_openai()
        if "id" in out:
            assert d.index not in calls, "id/name sent twice"
            calls[d.index] = {"id": out["id"], "name": out["function"]["name"], "arguments": ""}
        calls[d.index]["arguments"] += out["function"]["arguments"]
    return [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("text", [ONE_CALL, TWO_CALLS])
@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_streaming_matches_whole_parse(text, step):
    content, deltas = _stream(text, [step] * (len(text) // step + 1))
    expected_content, expected_calls = parse_tool_calls(text)
    assert content == (expected_content or "")
    calls = _calls_from_deltas(deltas)
    assert [c["name"] for c in calls] == [c.name for c in expected_calls]
    assert [json.loads(c["arguments"]) for c in calls] == [
        json.loads(c.arguments) for c in expected_calls
    ]


def test_streaming_sends_name_before_arguments_complete():
    parser = StreamingToolParser()
    _, deltas = parser.feed('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa')
    assert [d.name for d in deltas] == ["get_weather", None]
    assert deltas[0].arguments == "" and deltas[1].arguments == '{"city": "Pa'
    _, deltas = parser.feed('ris"}}\n</tool_call>')
    assert [d.arguments for d in deltas] == ['ris"}']
    assert parser.num_calls == 1


def test_streaming_arguments_flow_before_end_with_one_char_pieces():
    parser = StreamingToolParser()
    text = ONE_CALL[: ONE_CALL.index('"n"')]  # arguments still open
    sent = "".join(d.arguments for ch in text for d in parser.feed(ch)[1])
    assert sent == '{"city": "Par\\"is", '


def test_streaming_holds_back_only_partial_tag():
    parser = StreamingToolParser()
    assert parser.feed("Hello <tool") == ("Hello ", [])
    assert parser.feed("s are fun") == ("<tools are fun", [])
    assert parser.feed(" <") == (" ", [])
    assert parser.finish() == ("<", [])
    assert parser.num_calls == 0


def test_streaming_unusual_key_order_and_unterminated():
    content, deltas = _stream(
        '<tool_call>{"arguments": {"q": 1}, "name": "s"}</tool_call>', [5] * 20
    )
    assert content == ""
    assert _calls_from_deltas(deltas)[0]["name"] == "s"
    content, deltas = _stream('<tool_call>{"name": "s", "arguments": {"q": 1}}\n', [4] * 20)
    assert json.loads(_calls_from_deltas(deltas)[0]["arguments"]) == {"q": 1}
