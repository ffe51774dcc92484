"""Server-sent events: the one place that frames, splits and reads SSE in the gateway.

Two dialects cross the gateway:

- OpenAI chat/text completions: ``data: <json>\\n\\n`` events, ended by ``data: [DONE]\\n\\n``;
- Anthropic Messages and OpenAI Responses: named events, ``event: <type>\\ndata: <json>\\n\\n``.

``SSEReader`` splits an upstream byte stream into events (any line ending, comments and
keep-alives dropped); ``data_of``, ``name_of``, ``json_of`` and ``json_object_of`` read one
event. The byte tests (``is_error_event``, ``is_usage_only``) are cheap pre-filters on the hot
path.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "DATA",
    "DONE",
    "SSEReader",
    "data_event",
    "data_of",
    "frame",
    "is_error_event",
    "is_usage_only",
    "json_object_of",
    "json_of",
    "name_of",
    "named_event",
]

DATA = b"data: "
EVENT = b"event: "
DONE = b"data: [DONE]\n\n"
# Mid-stream error events as vLLM/SGLang/OpenAI send them.
_ERROR_PREFIXES = (b'data: {"error"', b'data: {"object":"error"', b'data: {"object": "error"')


def frame(payload: bytes) -> bytes:
    """One data-only event around an already encoded payload."""
    return DATA + payload + b"\n\n"


def data_event(obj: Any) -> bytes:
    """One data-only event (OpenAI's dialect)."""
    return DATA + orjson.dumps(obj) + b"\n\n"


def named_event(name: str, obj: Any) -> bytes:
    """One named event (Anthropic's and the Responses API's dialect)."""
    return b"event: " + name.encode() + b"\n" + DATA + orjson.dumps(obj) + b"\n\n"


def data_of(event: bytes) -> bytes:
    """The data of one event (several data lines joined by newlines, as the SSE spec says)."""
    if event.startswith(DATA) and event.count(b"\n") <= 2:
        return event[6:].rstrip(b"\n")  # the common case: one data line
    parts = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(parts)


def name_of(event: bytes) -> bytes | None:
    """The ``event:`` field of one event, or None for a data-only event."""
    if not event.startswith(b"event:"):
        return None
    line = event.split(b"\n", 1)[0]
    return line[6:].strip()


def json_of(event: bytes) -> Any:
    """The data of one event, decoded; None when it is not JSON (``[DONE]``, garbage)."""
    if event.startswith(b"data: {"):
        # The common case, one data line: its JSON is the rest of the event (a second data
        # line cannot parse here: ``data:`` outside a string is not JSON, and a JSON string
        # holds no raw newline), so a failure falls through to the general path.
        try:
            return orjson.loads(event[6:])
        except orjson.JSONDecodeError:
            pass
    try:
        return orjson.loads(data_of(event))
    except orjson.JSONDecodeError:
        return None


def json_object_of(event: bytes) -> dict[str, Any] | None:
    """The event's data when it is one JSON object (every OpenAI chunk is), else None:
    anything else relayed would break the client's parser."""
    if event.startswith(b"data: {"):
        obj = json_of(event)
        return obj if isinstance(obj, dict) else None
    data = data_of(event)
    if not data.startswith(b"{"):
        return None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def is_error_event(event: bytes) -> bool:
    return event.startswith(_ERROR_PREFIXES)


def is_usage_only(event: bytes) -> bool:
    """An OpenAI chunk with no choices: the usage chunk ``include_usage`` asks for."""
    return b'"choices":[]' in event or b'"choices": []' in event


def _normalise(raw: bytes, keep_names: bool) -> bytes | None:
    """One raw event block -> ``[event: x\\n]data: ...\\n\\n``; None for comments and other fields."""
    if raw.startswith(DATA) and b"\n" not in raw:
        return raw + b"\n\n"  # the common case: one data line, already in shape
    name = None
    parts = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            parts.append(DATA + line[5:].lstrip(b" "))
        elif keep_names and line.startswith(b"event:"):
            name = line[6:].strip()
    if not parts:
        return None
    head = EVENT + name + b"\n" if name else b""
    return head + b"\n".join(parts) + b"\n\n"


class SSEReader:
    """Incremental splitter: ``feed`` bytes as they arrive, ``next`` yields whole events.

    Events come out normalised (``\\n`` line ends, one space after ``data:``), comments and
    ``id:``/``retry:`` fields dropped; ``keep_names`` keeps the ``event:`` line.
    """

    __slots__ = ("_buf", "_names")

    def __init__(self, keep_names: bool = False) -> None:
        self._buf = b""
        self._names = keep_names

    def feed(self, chunk: bytes) -> None:
        if b"\r" in chunk or self._buf.endswith(b"\r"):
            self._buf = (self._buf + chunk).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            self._buf += chunk

    def next(self) -> bytes | None:
        """The next complete event, or None until more bytes are fed."""
        while True:
            cut = self._buf.find(b"\n\n")
            if cut < 0:
                return None
            raw, self._buf = self._buf[:cut], self._buf[cut + 2 :]
            event = _normalise(raw, self._names)
            if event is not None:
                return event
