"""OpenAI's Responses API at the gateway's edge: requests in, ``response`` objects and events out.

Inbound, a Responses body becomes an OpenAI chat body: ``instructions`` -> a system message,
``input`` (a string, or items: messages with ``input_text`` / ``input_image`` /
``output_text`` parts, ``function_call``, ``function_call_output``) -> messages, function
``tools`` -> chat tools, ``tool_choice``, ``text.format`` -> ``response_format``,
``max_output_tokens`` -> ``max_tokens``. A ``previous_response_id`` prepends the stored
conversation. Dropped in translation (documented in the README): ``reasoning`` and
``reasoning`` items, non-function tools (web search, file search, computer use, custom
tools), ``include``, ``truncation``, ``service_tier``; all kept for a backend that takes
Responses natively (``gateway.backends.native``), which gets a stored conversation as items
(``input_items`` + ``replay_items``) in front of ``input``.

What chat completions cannot carry at all raises ``UntranslatableError`` (the body is well
formed; it can go only to a backend taking Responses natively): an ``input_image`` by
``file_id``, a non-assistant message (or function output) of only parts that are dropped
(``input_file``, ``input_audio``), an ``item_reference`` (an item the upstream stored), an
``input`` with no item left, a ``tool_choice`` forcing a built-in tool (or ``allowed_tools``,
``mcp``, ``custom``), and a conversation stored without a chat form (one answered natively
from such a body).

Outbound, a chat completion becomes a ``response`` and a chat stream becomes the Responses
event sequence: ``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta`` / ``.done``,
``response.function_call_arguments.delta`` / ``.done``, ``response.output_item.done``,
``response.completed`` (with usage); a failure mid-stream is an ``error`` event.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from gateway.errors import GatewayError, InvalidRequestError, UntranslatableError
from gateway.sse import named_event

__all__ = [
    "ResponsesStream",
    "input_items",
    "new_id",
    "output_messages",
    "replay_items",
    "to_chat",
    "to_response",
]

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_PASSED = ("temperature", "top_p", "parallel_tool_calls", "user", "stream")


def new_id(prefix: str) -> str:
    """``<prefix>_`` and 32 random hex digits (16 bytes from the OS: not guessable)."""
    return f"{prefix}_{os.urandom(16).hex()}"


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _parts(content: Any, where: str, may_vanish: bool = False) -> str | list[dict[str, Any]]:
    """Chat content from Responses parts; raises ``UntranslatableError`` where every part is
    one chat cannot carry (unless ``may_vanish``: an assistant's earlier refusal, say)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"{where} must be a string or an array", where)
    parts: list[dict[str, Any]] = []
    for j, p in enumerate(content):
        pw = f"{where}[{j}]"
        if not isinstance(p, dict) or not isinstance(p.get("type"), str):
            raise _bad(f"{pw} must be an object with a string 'type'", pw)
        kind = p["type"]
        if kind in ("input_text", "output_text", "text"):
            if not isinstance(p.get("text"), str):
                raise _bad(f"{pw}.text must be a string", f"{pw}.text")
            parts.append({"type": "text", "text": p["text"]})
        elif kind == "input_image":
            url = p.get("image_url")
            if not isinstance(url, str) and isinstance(p.get("file_id"), str):
                raise UntranslatableError(
                    f"{pw}: an input_image by file_id has no chat-completions form", param=pw
                )
            if not isinstance(url, str):
                raise _bad(f"{pw}.image_url must be a string", pw)
            image: dict[str, Any] = {"url": url}
            if p.get("detail"):
                image["detail"] = p["detail"]
            parts.append({"type": "image_url", "image_url": image})
        # refusal / input_file / input_audio: no chat equivalent every backend reads
    if content and not parts and not may_vanish:
        kinds = ", ".join(dict.fromkeys(p["type"] for p in content))
        raise UntranslatableError(
            f"{where}: content of only {kinds} parts has no chat-completions form", param=where
        )
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _items(items: list[Any], out: list[dict[str, Any]]) -> None:
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise _bad(f"input[{i}] must be an object", f"input[{i}]")
        kind = it.get("type", "message")
        if kind == "message":
            r = it.get("role")
            role = _ROLES.get(r) if isinstance(r, str) else None  # a list or object: unhashable
            if role is None:
                where = f"input[{i}]"
                raise _bad(f"{where}.role must be user, assistant, system or developer", where)
            content = it.get("content")
            if not isinstance(content, str):  # the common case needs no walk (nor a name)
                content = _parts(content, f"input[{i}].content", role == "assistant")
            out.append({"role": role, "content": content})
            continue
        where = f"input[{i}]"
        if kind == "function_call":
            if not isinstance(it.get("call_id"), str) or not isinstance(it.get("name"), str):
                raise _bad(f"{where} needs a string call_id and name", where)
            call = {
                "id": it["call_id"],
                "type": "function",
                "function": {"name": it["name"], "arguments": it.get("arguments") or "{}"},
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(it.get("call_id"), str):
                raise _bad(f"{where}.call_id must be a string", f"{where}.call_id")
            output = it.get("output")
            text = output if isinstance(output, str) else _parts(output or [], f"{where}.output")
            if not isinstance(text, str):
                text = "\n".join(p.get("text", "") for p in text if p["type"] == "text")
            out.append({"role": "tool", "tool_call_id": it["call_id"], "content": text})
        elif kind == "item_reference":
            raise UntranslatableError(
                f"{where}: an item_reference names an item stored upstream, which the gateway"
                " does not have",
                param=where,
            )
        # reasoning items, built-in tool calls: dropped (see module docstring)


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("'tools' must be an array", "tools")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict):
            raise _bad(f"tools[{i}] must be an object", f"tools[{i}]")
        if t.get("type") != "function":
            continue  # web_search, file_search, custom, local_shell ...: not translatable
        if not isinstance(t.get("name"), str):
            raise _bad(f"tools[{i}].name must be a string", f"tools[{i}].name")
        fn: dict[str, Any] = {"name": t["name"], "parameters": t.get("parameters") or {}}
        for k in ("description", "strict"):
            if t.get(k) is not None:
                fn[k] = t[k]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(tc: Any) -> Any:
    if tc in ("auto", "none", "required"):
        return tc
    if isinstance(tc, dict) and tc.get("type") == "function" and isinstance(tc.get("name"), str):
        return {"type": "function", "function": {"name": tc["name"]}}
    raise _bad("'tool_choice' must be auto, none, required or a function", "tool_choice")


def _hosted_choice(tc: Any) -> None:
    """A ``tool_choice`` of another kind than a function (a built-in tool, ``allowed_tools``,
    ``mcp``, ``custom``): the translated request offers function tools only."""
    kind = tc.get("type") if isinstance(tc, dict) else None
    if isinstance(kind, str) and kind != "function":
        raise UntranslatableError(
            f"tool_choice: a choice of type {kind!r} has no chat-completions form",
            param="tool_choice",
        )


def _format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    if fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise _bad("'text.format.type' must be text, json_object or json_schema", "text.format")


def to_chat(body: dict[str, Any], history: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A Responses request body (plus the stored conversation it continues) as a chat body."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required and must be a string", "model")
    msgs: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _bad("'instructions' must be a string", "instructions")
        msgs.append({"role": "system", "content": instructions})
    # the stored conversation's own instructions are not carried over (as OpenAI does)
    msgs += [m for m in history or () if m.get("role") != "system"]
    inp = body.get("input")
    if isinstance(inp, str):
        msgs.append({"role": "user", "content": inp})
    elif isinstance(inp, list):
        _items(inp, msgs)
    elif inp is not None:
        raise _bad("'input' must be a string or an array of items", "input")
    for m in msgs:
        if m["role"] != "system":
            break
    else:
        if isinstance(inp, list) and inp:
            raise UntranslatableError("input: no item has a chat-completions form", param="input")
        raise _bad("'input' is required", "input")
    chat: dict[str, Any] = {"model": model, "messages": msgs}
    for name in _PASSED:
        if body.get(name) is not None:
            chat[name] = body[name]
    mo = body.get("max_output_tokens")
    if mo is not None:
        chat["max_tokens"] = mo
    tc = body.get("tool_choice")
    if tc is not None and not isinstance(tc, str):  # the common cases: absent, or "auto"
        _hosted_choice(tc)
    if body.get("tools"):
        tools = _tools(body["tools"])
        if tools:
            chat["tools"] = tools
            if tc is not None:
                chat["tool_choice"] = _tool_choice(tc)
    rf = _format(body.get("text"))
    if rf is not None:
        chat["response_format"] = rf
    return chat


# ---------------------------------------------------------------- answers


def _usage(u: Any) -> dict[str, Any]:
    u = u if isinstance(u, dict) else {}
    details = u.get("prompt_tokens_details")
    cached = int((details or {}).get("cached_tokens") or 0) if isinstance(details, dict) else 0
    p, c = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
    return {
        "input_tokens": p,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": c,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": p + c,
    }


def _envelope(rid: str, body: dict[str, Any], model: str, status: str) -> dict[str, Any]:
    """The fields every ``response`` object carries, echoing the request's settings."""
    text = body.get("text") if isinstance(body.get("text"), dict) else {"format": {"type": "text"}}
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": [],
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "text": text,
        "store": body.get("store", True),
        "metadata": body.get("metadata") or {},
        "usage": None,
    }


def _message_item(text: str, item_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id or new_id("msg"),
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _call_item(call_id: str, name: str, arguments: str, item_id: str | None = None) -> dict:
    return {
        "type": "function_call",
        "id": item_id or new_id("fc"),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def to_response(doc: dict[str, Any], body: dict[str, Any], rid: str, model: str) -> dict[str, Any]:
    """A chat completion (parsed) as a ``response`` object."""
    choice = (doc.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    out = _envelope(rid, body, model, "completed")
    if msg.get("content"):
        out["output"].append(_message_item(msg["content"]))
    for tc in msg.get("tool_calls") or ():
        fn = tc.get("function") or {}
        out["output"].append(
            _call_item(tc.get("id") or new_id("call"), fn.get("name", ""), fn.get("arguments", ""))
        )
    if choice.get("finish_reason") == "length":
        out["status"] = "incomplete"
        out["incomplete_details"] = {"reason": "max_output_tokens"}
    out["usage"] = _usage(doc.get("usage"))
    return out


def output_messages(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A response's output as chat messages (what a later previous_response_id continues)."""
    text = "".join(
        p.get("text", "")
        for it in response.get("output") or ()
        if it.get("type") == "message"
        for p in it.get("content") or ()
    )
    calls = [
        {
            "id": it["call_id"],
            "type": "function",
            "function": {"name": it["name"], "arguments": it["arguments"]},
        }
        for it in response.get("output") or ()
        if it.get("type") == "function_call"
    ]
    msg: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        msg["tool_calls"] = calls
    return [msg]


def input_items(value: Any) -> list[Any]:
    """A request's ``input`` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return list(value) if isinstance(value, list) else []


def replay_items(response: dict[str, Any]) -> list[Any]:
    """A response's output as input items for a later turn: messages and function calls
    without their ids (an upstream may not know them), reasoning items as they came."""
    out: list[Any] = []
    for it in response.get("output") or ():
        if isinstance(it, dict) and it.get("type") in ("message", "function_call"):
            out.append({k: v for k, v in it.items() if k not in ("id", "status")})
        elif isinstance(it, dict):
            out.append(it)
    return out


def error_event(exc: GatewayError, seq: int) -> bytes:
    return named_event(
        "error",
        {
            "type": "error",
            "code": exc.code,
            "message": exc.message,
            "param": exc.param,
            "sequence_number": seq,
        },
    )


# ---------------------------------------------------------------- the event stream
#
# Every event is ``event: <type>\ndata: {"type":"<type>", <fields>, "sequence_number":<n>}``,
# byte for byte what ``named_event(type, {"type": type, **fields, "sequence_number": n})``
# writes (orjson: compact, keys in insertion order). The per-chunk ones (text and argument
# deltas), the message item's events and the response object sent twice at the start are put
# together from pre-encoded pieces: no dict per event, one ``orjson.dumps`` per string. The
# function-call items and the final response are encoded from their dicts (tests pin both
# forms to the same bytes).

_SEQ = b',"sequence_number":%d}\n\n'
_SEQS = tuple(_SEQ % n for n in range(512))  # the end of each event, for the usual lengths


def _seq(n: int) -> bytes:
    """The end of the event numbered ``n``."""
    return _SEQS[n] if n < 512 else _SEQ % n


def _head(kind: str) -> bytes:
    """The bytes of an event up to its first field: ``event: k\\ndata: {"type":"k",``."""
    return b'event: %s\ndata: {"type":"%s",' % (kind.encode(), kind.encode())


_CREATED = _head("response.created") + b'"response":'
_IN_PROGRESS = _head("response.in_progress") + b'"response":'
_ITEM_ADDED = _head("response.output_item.added") + b'"output_index":%d,"item":'
_ITEM_DONE = _head("response.output_item.done") + b'"output_index":%d,"item":'
_PART_ADDED = _head("response.content_part.added")
_PART_DONE = _head("response.content_part.done")
_TEXT_DELTA = _head("response.output_text.delta")
_TEXT_DONE = _head("response.output_text.done")
_ARGS_DELTA = _head("response.function_call_arguments.delta") + b'"item_id":'
_EMPTY_PART = b'"part":{"type":"output_text","text":"","annotations":[]}'


class ResponsesStream:
    """Turns OpenAI chat chunks (parsed) into the Responses event sequence; ``response``
    holds the final object once ``finish`` ran (for ``store``)."""

    __slots__ = (
        "response",
        "_seq",
        "_started",
        "_text",
        "_msg_id",
        "_text_index",
        "_text_at",
        "_text_head",
        "_calls",
        "_finish",
        "_usage",
    )

    def __init__(self, body: dict[str, Any], rid: str, model: str) -> None:
        self.response = _envelope(rid, body, model, "in_progress")
        self._seq = 0
        self._started = False
        self._text: list[str] | None = None  # the open message item's text
        self._msg_id = ""
        self._text_index = 0
        self._text_at = b""  # the open message's item_id, output_index and content_index
        self._text_head = b""  # a text delta event of the open message, up to its delta
        self._calls: dict[int, _Call] = {}  # chat tool-call index -> its function_call item
        self._finish: str | None = None
        self._usage: Any = None

    def _ev(self, kind: str, data: dict[str, Any]) -> bytes:
        data = {"type": kind, **data, "sequence_number": self._seq}
        self._seq += 1
        return named_event(kind, data)

    def _start(self) -> list[bytes]:
        self._started = True
        r = orjson.dumps(self.response)  # the same object twice: encoded once
        seq = self._seq
        self._seq += 2
        return [_CREATED + r + _seq(seq), _IN_PROGRESS + r + _seq(seq + 1)]

    def _open_text(self) -> list[bytes]:
        self._text = []
        self._msg_id = new_id("msg")
        idx = self._text_index = len(self.response["output"]) + len(self._calls)
        mid = orjson.dumps(self._msg_id)
        # where the text goes: the start of every event of this message's one content part
        self._text_at = b'"item_id":' + mid + b',"output_index":%d,"content_index":0,' % idx
        self._text_head = _TEXT_DELTA + self._text_at + b'"delta":'
        seq = self._seq
        self._seq += 2
        item = b'{"type":"message","id":' + mid + b',"status":"in_progress","role":"assistant"'
        return [
            _ITEM_ADDED % idx + item + b',"content":[]}' + _seq(seq),
            _PART_ADDED + self._text_at + _EMPTY_PART + _seq(seq + 1),
        ]

    def _close_text(self) -> list[bytes]:
        if self._text is None:
            return []
        text, self._text = "".join(self._text), None
        item = _message_item(text, self._msg_id)
        self.response["output"].append(item)
        at, tj = self._text_at, orjson.dumps(text)
        part = b'{"type":"output_text","text":' + tj + b',"annotations":[]}'
        done = b'{"type":"message","id":' + orjson.dumps(self._msg_id)
        done += b',"status":"completed","role":"assistant","content":[' + part + b"]}"
        seq = self._seq
        self._seq += 3
        return [
            _TEXT_DONE + at + b'"text":' + tj + _seq(seq),
            _PART_DONE + at + b'"part":' + part + _seq(seq + 1),
            _ITEM_DONE % self._text_index + done + _seq(seq + 2),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out = [] if self._started else self._start()
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for c in chunk.get("choices") or ():
            if c.get("index", 0) != 0:
                continue
            d = c.get("delta") or {}
            text = d.get("content")
            if text:
                if self._text is None:
                    out += self._open_text()
                self._text.append(text)  # type: ignore[union-attr]
                out.append(self._text_head + orjson.dumps(text) + _seq(self._seq))
                self._seq += 1
            calls = d.get("tool_calls")
            if calls:
                for tc in calls:
                    self._tool_delta(tc, out)
            if c.get("finish_reason"):
                self._finish = c["finish_reason"]
        return out

    def _tool_delta(self, tc: dict[str, Any], out: list[bytes]) -> None:
        i = tc.get("index", 0)
        fn = tc.get("function") or {}
        st = self._calls.get(i)
        if st is None:
            out += self._close_text()
            idx = len(self.response["output"]) + len(self._calls)
            item = {
                "type": "function_call",
                "id": new_id("fc"),
                "call_id": tc.get("id") or new_id("call"),
                "name": fn.get("name") or "",
                "arguments": "",
                "status": "in_progress",
            }
            st = self._calls[i] = _Call(item, idx)
            out.append(self._ev("response.output_item.added", {"output_index": idx, "item": item}))
        args = fn.get("arguments")
        if args:
            st.args.append(args)
            out.append(st.head + orjson.dumps(args) + _seq(self._seq))
            self._seq += 1

    def finish(self) -> list[bytes]:
        out = [] if self._started else self._start()
        out += self._close_text()
        for st in sorted(self._calls.values(), key=lambda s: s.index):
            item = st.item
            args = "".join(st.args)
            done = _call_item(item["call_id"], item["name"], args, item["id"])
            self.response["output"].append(done)
            out.append(
                self._ev(
                    "response.function_call_arguments.done",
                    {"item_id": item["id"], "output_index": st.index, "arguments": args},
                )
            )
            out.append(
                self._ev("response.output_item.done", {"output_index": st.index, "item": done})
            )
        r = self.response
        r["status"] = "completed"
        if self._finish == "length":
            r["status"] = "incomplete"
            r["incomplete_details"] = {"reason": "max_output_tokens"}
        r["usage"] = _usage(self._usage)
        kind = "response.completed" if r["status"] == "completed" else "response.incomplete"
        out.append(self._ev(kind, {"response": r}))
        return out

    def error(self, exc: GatewayError) -> list[bytes]:
        """The stream's last event: numbered after every event already sent."""
        ev = error_event(exc, self._seq)
        self._seq += 1
        return [ev]


class _Call:
    """One streamed function call: its item, output index, arguments so far and the
    pre-encoded start of its argument delta events."""

    __slots__ = ("item", "index", "args", "head")

    def __init__(self, item: dict[str, Any], index: int) -> None:
        self.item = item
        self.index = index
        self.args: list[str] = []
        self.head = _ARGS_DELTA + orjson.dumps(item["id"]) + b',"output_index":%d,"delta":' % index
