"""Hermes-style tool calls (Qwen2.5 / Qwen3): ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

``parse_tool_calls`` splits a finished output into content and OpenAI ``tool_calls``.
``StreamingToolParser`` does the same incrementally: content is released as it comes (holding
back only a possible partial ``<tool_call>`` tag), and each call is sent as OpenAI deltas: first
``{index, id, type, function: {name, arguments: ""}}`` once the name is complete, then argument
text as it is generated. The argument deltas concatenate to the exact JSON text the model wrote.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

__all__ = ["StreamingToolParser", "ToolCall", "ToolCallDelta", "parse_tool_calls"]

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
_CALL_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_NAME_RE = re.compile(
    r'^\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*', re.DOTALL
)
_DECODER = json.JSONDecoder()


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: str  # JSON text
    id: str = field(default_factory=new_call_id)

    def to_openai(self) -> dict:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(slots=True)
class ToolCallDelta:
    index: int
    id: str | None = None  # set (with name) on a call's first delta only
    name: str | None = None
    arguments: str = ""

    def to_openai(self) -> dict:
        out: dict = {"index": self.index}
        if self.id is not None:
            out |= {
                "id": self.id,
                "type": "function",
                "function": {"name": self.name, "arguments": self.arguments},
            }
        else:
            out["function"] = {"arguments": self.arguments}
        return out


def _parse_call(body: str) -> ToolCall | None:
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    return ToolCall(name=obj["name"], arguments=json.dumps(args, ensure_ascii=False))


def parse_tool_calls(text: str) -> tuple[str | None, list[ToolCall]]:
    """Split a finished output into (content before the first call or None, tool calls).
    If any call is not valid JSON the whole text stays content, as vLLM's hermes parser does."""
    start = text.find(TOOL_CALL_START)
    if start < 0:
        return text, []
    calls = [_parse_call(m.group(1)) for m in _CALL_RE.finditer(text, start)]
    if not calls or any(c is None for c in calls):
        return text, []
    content = text[:start]
    return (content if content.strip() else None), calls  # type: ignore[return-value]


def _partial_tag_len(text: str, tag: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of tag."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def _json_value_end(text: str) -> int | None:
    """Index just past the JSON object/array starting text[0] once it is closed, else None."""
    depth, in_str, escaped = 0, False, False
    for i, ch in enumerate(text):
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


class StreamingToolParser:
    """Feed generated text pieces; get (content delta, tool call deltas) back."""

    def __init__(self) -> None:
        self._pending = ""  # content held back (possible partial start tag)
        self._call = ""  # text of the current call after <tool_call>
        self._in_call = False
        self._index = -1
        self._id: str | None = None  # current call's id once its name was sent
        self._args_sent = 0
        self.num_calls = 0

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        content, deltas = "", []
        while text:
            if self._in_call:
                joined = self._call + text
                end = joined.find(TOOL_CALL_END)
                if end < 0:
                    self._call, text = joined, ""
                    deltas += self._advance_call(final=False)
                else:
                    self._call, text = joined[:end], joined[end + len(TOOL_CALL_END) :]
                    deltas += self._advance_call(final=True)
                    self._in_call = False
            else:
                joined = self._pending + text
                start = joined.find(TOOL_CALL_START)
                if start < 0:
                    keep = _partial_tag_len(joined, TOOL_CALL_START)
                    if self._index < 0:
                        content += joined[: len(joined) - keep]
                    self._pending, text = joined[len(joined) - keep :], ""
                else:
                    if self._index < 0:  # text between or after calls is dropped
                        content += joined[:start]
                    self._pending, text = "", joined[start + len(TOOL_CALL_START) :]
                    self._start_call()
        return content, deltas

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        """Flush at end of generation (a call may lack its end tag when generation stops)."""
        if self._in_call:
            self._in_call = False
            return "", self._advance_call(final=True)
        pending, self._pending = self._pending, ""
        return (pending if self._index < 0 else ""), []

    def _start_call(self) -> None:
        self._in_call, self._call, self._id, self._args_sent = True, "", None, 0
        self._index += 1

    def _advance_call(self, final: bool) -> list[ToolCallDelta]:
        deltas: list[ToolCallDelta] = []
        if self._id is None:
            head = _NAME_RE.match(self._call)
            if head is None:
                if not final:
                    return deltas
                call = _parse_call(self._call)  # unusual key order: send whole call at once
                if call is None:
                    return deltas
                self.num_calls += 1
                return [ToolCallDelta(self._index, call.id, call.name, call.arguments)]
            self._id = new_call_id()
            self.num_calls += 1
            name = json.loads(f'"{head.group(1)}"')
            deltas.append(ToolCallDelta(self._index, self._id, name, ""))
            self._call = self._call[head.end() :]  # keep only the arguments text
        if self._args_sent == 0:
            self._call = self._call.lstrip()
        args = self._call
        end = _json_value_end(args) if args[:1] in ("{", "[") else None
        if end is not None:
            args = args[:end]
        elif final:
            args = args.rstrip().removesuffix("}").rstrip()  # outer object's brace
        elif args[:1] not in ("{", "["):
            return deltas  # scalar arguments: wait for the end
        if len(args) > self._args_sent:
            deltas.append(ToolCallDelta(self._index, arguments=args[self._args_sent :]))
            self._args_sent = len(args)
        return deltas
