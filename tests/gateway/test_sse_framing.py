"""gateway/sse.py: the one SSE framing/splitting module every stream goes through."""

from __future__ import annotations

from gateway.sse import (
    DONE,
    SSEReader,
    data_event,
    data_of,
    is_error_event,
    is_usage_only,
    json_of,
    name_of,
    named_event,
)


def _all(reader: SSEReader) -> list[bytes]:
    out = []
    while (e := reader.next()) is not None:
        out.append(e)
    return out


def test_reader_splits_across_chunk_boundaries_and_line_endings():
    r = SSEReader()
    stream = b'data: {"a":1}\r\n\r\n: keep-alive\n\ndata: {"b"\r'
    for i in range(len(stream)):  # one byte at a time: no boundary may be missed
        r.feed(stream[i : i + 1])
    r.feed(b"\n\r\nid: 7\nretry: 10\n\ndata: [DONE]\n\n")
    assert _all(r) == [b'data: {"a":1}\n\n', b'data: {"b"\n\n', DONE]


def test_reader_keeps_names_only_when_asked():
    raw = b'event: message_start\ndata: {"type":"message_start"}\n\n'
    plain, named = SSEReader(), SSEReader(keep_names=True)
    plain.feed(raw)
    named.feed(raw)
    assert _all(plain) == [b'data: {"type":"message_start"}\n\n']
    [event] = _all(named)
    assert name_of(event) == b"message_start" and json_of(event) == {"type": "message_start"}


def test_multi_line_data_is_joined_with_newlines():
    r = SSEReader()
    r.feed(b"data: line one\ndata:line two\n\n")
    [event] = _all(r)
    assert data_of(event) == b"line one\nline two"


def test_framing_round_trips_and_byte_filters():
    e = data_event({"choices": [], "usage": {"prompt_tokens": 1}})
    assert json_of(e) == {"choices": [], "usage": {"prompt_tokens": 1}} and is_usage_only(e)
    assert name_of(e) is None and json_of(DONE) is None
    n = named_event("ping", {"type": "ping"})
    assert n == b'event: ping\ndata: {"type":"ping"}\n\n' and json_of(n) == {"type": "ping"}
    assert is_error_event(data_event({"error": {"message": "x"}}))
    assert not is_error_event(data_event({"choices": [{"delta": {"content": '"error"'}}]}))
