"""Anthropic's Messages API at the gateway's edge: requests in, answers and events out.

Inbound, a Messages body becomes an OpenAI chat body (what every chat-speaking backend
gets): ``system`` -> a system message, ``tool_use`` blocks -> ``tool_calls``,
``tool_result`` blocks -> ``tool`` messages, base64/URL ``image`` blocks -> ``image_url``
parts, ``tools[].input_schema`` -> function ``parameters``, ``tool_choice`` any/tool/none ->
required/function/none, ``stop_sequences`` -> ``stop``, ``metadata.user_id`` -> ``user``.
Dropped in translation (documented in the README): ``thinking`` and thinking blocks of earlier
turns, ``cache_control`` markers, server tools (web search, code execution ...) and
``document`` blocks, ``service_tier``. All of them are kept where the backend is Anthropic's
API: the caller's body goes there natively (``gateway.backends.native``).

What chat completions cannot carry at all raises ``UntranslatableError`` (the body is well
formed; it can go only to a backend taking Messages natively): an ``image`` whose source is
neither base64 nor a URL (a Files API ``file``), a user turn of only blocks that are dropped
(say, only ``document`` or ``search_result`` blocks: the turn would vanish), a conversation
with no turn left, a ``tool_choice`` forcing a server tool.

Outbound, a chat completion becomes a ``message`` and a chat stream becomes Anthropic's event
sequence: ``message_start``, ``ping``, ``content_block_start`` / ``_delta`` (``text_delta``,
``input_json_delta``) / ``_stop``, ``message_delta`` (``stop_reason``, usage),
``message_stop``; errors use Anthropic's ``{"type": "error", "error": {...}}`` shape.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError, InvalidRequestError, UntranslatableError
from gateway.sse import named_event

__all__ = ["AnthropicStream", "error_event", "error_json", "to_chat", "to_message"]

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Our error classes' HTTP status -> Anthropic's error type (the SDK maps status to exceptions).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}
_PASSED = ("temperature", "top_p", "top_k", "max_tokens", "stream")


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, b in enumerate(content):
            if not isinstance(b, dict):
                raise _bad(f"{where}[{j}] must be an object", f"{where}[{j}]")
            if b.get("type") == "text":
                if not isinstance(b.get("text"), str):
                    raise _bad(f"{where}[{j}].text must be a string", f"{where}[{j}].text")
                parts.append(b["text"])
        return "\n".join(parts)
    if content is None:
        return ""
    raise _bad(f"{where} must be a string or an array of blocks", where)


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    src = block.get("source")
    if not isinstance(src, dict):
        raise _bad(f"{where}.source must be an object", f"{where}.source")
    kind = src.get("type")
    if kind == "base64":
        url = f"data:{src.get('media_type', 'image/png')};base64,{src.get('data', '')}"
    elif kind == "url" and isinstance(src.get("url"), str):
        url = src["url"]
    elif isinstance(kind, str) and kind != "url":  # e.g. "file": a Files API id
        raise UntranslatableError(
            f"{where}.source: an image of source type {kind!r} has no chat-completions form"
            " (base64 and url have)",
            param=f"{where}.source",
        )
    else:
        raise _bad(f"{where}.source.type must be base64 or url", f"{where}.source.type")
    return {"type": "image_url", "image_url": {"url": url}}


def _message(i: int, m: Any, out: list[dict[str, Any]]) -> None:
    role = m.get("role") if isinstance(m, dict) else None
    content = m.get("content") if role is not None else None
    if isinstance(content, str) and (role == "user" or role == "assistant"):
        out.append({"role": role, "content": content})  # the common case: no walk, no names
        return
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise _bad(f"{where} must be an object", where)
    if role == "system":  # Claude Code sends mid-conversation system turns
        out.append({"role": "system", "content": _text_of(content, f"{where}.content")})
        return
    if role not in ("user", "assistant"):
        raise _bad(f"{where}.role must be user, assistant or system", f"{where}.role")
    if isinstance(content, str):
        out.append({"role": role, "content": content})
        return
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or an array of blocks", f"{where}.content")
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    dropped: list[str] = []  # the kinds of blocks chat cannot carry
    results = 0
    for j, b in enumerate(content):
        bw = f"{where}.content[{j}]"
        if not isinstance(b, dict) or not isinstance(b.get("type"), str):
            raise _bad(f"{bw} must be an object with a string 'type'", bw)
        kind = b["type"]
        if kind == "text":
            if not isinstance(b.get("text"), str):
                raise _bad(f"{bw}.text must be a string", f"{bw}.text")
            parts.append({"type": "text", "text": b["text"]})
        elif kind == "image":
            parts.append(_image(b, bw))
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(b.get("id"), str) or not isinstance(b.get("name"), str):
                raise _bad(f"{bw} needs a string id and name", bw)
            args = orjson.dumps(b.get("input") or {}).decode()
            calls.append(
                {
                    "id": b["id"],
                    "type": "function",
                    "function": {"name": b["name"], "arguments": args},
                }
            )
        elif kind == "tool_result" and role == "user":
            if not isinstance(b.get("tool_use_id"), str):
                raise _bad(f"{bw}.tool_use_id must be a string", f"{bw}.tool_use_id")
            text = _text_of(b.get("content"), f"{bw}.content")
            if b.get("is_error"):
                text = "Error: " + text
            # tool results answer the previous assistant turn: they go before the user's text
            out.append({"role": "tool", "tool_call_id": b["tool_use_id"], "content": text})
            results += 1
        else:  # thinking / redacted_thinking / document / server-tool blocks: dropped
            dropped.append(kind)
    if role == "user" and dropped and not (parts or results):
        kinds = ", ".join(dict.fromkeys(dropped))
        raise UntranslatableError(
            f"{where}: a user turn of only {kinds} blocks has no chat-completions form",
            param=where,
        )
    if role == "assistant":
        msg: dict[str, Any] = {"role": "assistant", "content": _join(parts) if parts else None}
        if calls:
            msg["tool_calls"] = calls
        if parts or calls:
            out.append(msg)
    elif parts:
        out.append({"role": "user", "content": _join(parts)})


def _join(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text-only content as one string (what every chat backend reads); else the parts."""
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("'tools' must be an array", "tools")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise _bad(f"tools[{i}] must be an object with a string name", f"tools[{i}]")
        if "input_schema" not in t:
            continue  # a server tool (web_search_..., bash_..., ...): no chat equivalent
        fn: dict[str, Any] = {"name": t["name"], "parameters": t["input_schema"]}
        if t.get("description"):
            fn["description"] = t["description"]
        out.append({"type": "function", "function": fn})
    return out


def _forced_tool(name: Any, tools: list[Any]) -> None:
    """A ``tool_choice`` forcing a server tool: the translated request could not offer it."""
    for t in tools:
        if isinstance(t, dict) and t.get("name") == name and "input_schema" not in t:
            raise UntranslatableError(
                f"tool_choice: forces the server tool {name!r}, which chat completions"
                " cannot offer",
                param="tool_choice",
            )


def _tool_choice(tc: Any) -> Any:
    if not isinstance(tc, dict):
        raise _bad("'tool_choice' must be an object", "tool_choice")
    kind = tc.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool" and isinstance(tc.get("name"), str):
        return {"type": "function", "function": {"name": tc["name"]}}
    raise _bad("'tool_choice.type' must be auto, any, tool or none", "tool_choice")


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Messages request body as an OpenAI chat body; raises InvalidRequestError."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required and must be a string", "model")
    mt = body.get("max_tokens")
    if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
        raise _bad("'max_tokens' is required and must be a positive integer", "max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array", "messages")
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        text = _text_of(system, "system")
        if text:
            out.append({"role": "system", "content": text})
    for i, m in enumerate(messages):
        _message(i, m, out)
    if not out or out[-1]["role"] == "system" and all(m["role"] == "system" for m in out):
        raise UntranslatableError("messages: no turn has a chat-completions form", param="messages")
    chat: dict[str, Any] = {"model": model, "messages": out}
    for name in _PASSED:
        if body.get(name) is not None:
            chat[name] = body[name]
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("'stop_sequences' must be an array of strings", "stop_sequences")
        chat["stop"] = stops
    if body.get("tools"):
        tools = _tools(body["tools"])
        if tools:
            chat["tools"] = tools
    tc = body.get("tool_choice")
    if isinstance(tc, dict) and tc.get("type") == "tool":
        _forced_tool(tc.get("name"), body["tools"] if isinstance(body.get("tools"), list) else [])
    if tc is not None and chat.get("tools"):
        chat["tool_choice"] = _tool_choice(tc)
        if tc.get("disable_parallel_tool_use"):
            chat["parallel_tool_calls"] = False
    meta = body.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("user_id"), str):
        chat["user"] = meta["user_id"]
    return chat


# ---------------------------------------------------------------- answers


def _usage(u: Any) -> dict[str, int]:
    u = u if isinstance(u, dict) else {}
    details = u.get("prompt_tokens_details")
    cached = int((details or {}).get("cached_tokens") or 0) if isinstance(details, dict) else 0
    prompt = int(u.get("prompt_tokens") or 0)
    out = {"input_tokens": prompt - cached, "output_tokens": int(u.get("completion_tokens") or 0)}
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def _msg_id(chat_id: Any) -> str:
    s = str(chat_id or "gateway")
    return s if s.startswith("msg_") else "msg_" + s.removeprefix("chatcmpl-")


def _input(arguments: Any) -> Any:
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": arguments}  # a model that wrote broken JSON: keep what it wrote
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def to_message(doc: dict[str, Any], model: str) -> dict[str, Any]:
    """A chat completion (parsed) as a Messages ``message``."""
    choice = (doc.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    for tc in msg.get("tool_calls") or ():
        fn = tc.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": tc.get("id") or "toolu_gateway",
                "name": fn.get("name", ""),
                "input": _input(fn.get("arguments")),
            }
        )
    return {
        "id": _msg_id(doc.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": _usage(doc.get("usage")),
    }


def error_json(exc: GatewayError) -> bytes:
    kind = ERROR_TYPES.get(exc.status, "api_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": exc.message}})


# Stream events, byte for byte what ``named_event(type, {"type": type, ...})`` writes (orjson:
# compact, keys in insertion order); the per-chunk ones (text and tool-input deltas) and the
# fixed ones are put together from pre-encoded pieces, not built as dicts and encoded.
_PING = named_event("ping", {"type": "ping"})
_MESSAGE_STOP = named_event("message_stop", {"type": "message_stop"})
_BLOCK_START = b'event: content_block_start\ndata: {"type":"content_block_start","index":%d,'
_BLOCK_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":'
_TEXT_DELTA = b'{"type":"text_delta","text":'
_JSON_DELTA = b'{"type":"input_json_delta","partial_json":'
_DELTA_END = b"}}\n\n"


def error_event(exc: GatewayError) -> bytes:
    """The ``error`` event that ends a failed stream."""
    return b"event: error\ndata: " + error_json(exc) + b"\n\n"


class AnthropicStream:
    """Turns OpenAI chat chunks (parsed) into Anthropic stream events, block by block."""

    __slots__ = (
        "_model",
        "_est",
        "_started",
        "_block",
        "_open",
        "_tools",
        "_stop",
        "_usage",
        "_text_head",
        "_json_head",
    )

    def __init__(self, model: str, input_estimate: int) -> None:
        self._model = model
        self._est = input_estimate
        self._started = False
        self._block = -1  # index of the current content block
        self._open: str | None = None  # "text" | "tool" while a block is open
        self._tools: dict[int, int] = {}  # chat tool-call index -> block index
        self._stop = "end_turn"
        self._usage: dict[str, int] | None = None
        self._text_head = b""  # a text delta of the open block, up to its text
        self._json_head = b""  # an input JSON delta of the open block, up to its JSON

    def _start(self, chunk: dict[str, Any]) -> list[bytes]:
        self._started = True
        message: dict[str, Any] = {
            "id": _msg_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._est, "output_tokens": 0},
        }
        return [
            named_event("message_start", {"type": "message_start", "message": message}),
            _PING,
        ]

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [_BLOCK_STOP % self._block]

    def _open_block(self, kind: str, block: bytes) -> list[bytes]:
        """Close the open block, start the next one (``block``: its encoded content_block)."""
        out = self._close()
        i = self._block = self._block + 1
        self._open = kind
        out.append(_BLOCK_START % i + b'"content_block":' + block + b"}\n\n")
        delta = _DELTA % i
        self._text_head = delta + _TEXT_DELTA
        self._json_head = delta + _JSON_DELTA
        return out

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out = [] if self._started else self._start(chunk)
        if chunk.get("usage"):
            self._usage = _usage(chunk["usage"])
        for c in chunk.get("choices") or ():
            if c.get("index", 0) != 0:
                continue  # Messages has one answer; n > 1 is not a Messages request
            d = c.get("delta") or {}
            text = d.get("content")
            if text:
                if self._open != "text":
                    out += self._open_block("text", b'{"type":"text","text":""}')
                out.append(self._text_head + orjson.dumps(text) + _DELTA_END)
            calls = d.get("tool_calls")
            if calls:
                for tc in calls:
                    self._tool_delta(tc, out)
            if c.get("finish_reason"):
                self._stop = STOP_REASONS.get(c["finish_reason"], "end_turn")
        return out

    def _tool_delta(self, tc: dict[str, Any], out: list[bytes]) -> None:
        i = tc.get("index", 0)
        fn = tc.get("function") or {}
        if i not in self._tools:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": tc.get("id") or f"toolu_gateway_{i}",
                "name": fn.get("name") or "",
                "input": {},
            }
            out += self._open_block("tool", orjson.dumps(block))
            self._tools[i] = self._block
        args = fn.get("arguments")
        if args:
            out.append(self._json_head + orjson.dumps(args) + _DELTA_END)

    def finish(self) -> list[bytes]:
        out = [] if self._started else self._start({})
        out += self._close()
        usage = self._usage or {"output_tokens": 0}
        out.append(
            named_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self._stop, "stop_sequence": None},
                    "usage": usage,
                },
            )
        )
        out.append(_MESSAGE_STOP)
        return out

    def error(self, exc: GatewayError) -> list[bytes]:
        return [error_event(exc)]
