"""Between whole answers and SSE streams, both ways, so one cache entry serves both kinds of client.

``completion_to_sse`` replays a cached ``chat.completion`` (or ``text_completion``) as the
chunk events an OpenAI stream would carry; ``StreamAssembler`` folds a streamed answer's
events back into the whole answer, the way the ``openai`` SDK accumulates them.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.sse import DONE, SSEReader, data_event, data_of

__all__ = ["StreamAssembler", "completion_to_sse"]

_DELTA_TEXT = ("content", "reasoning_content", "reasoning", "refusal")


# ---------------------------------------------------------------- whole -> events


def completion_to_sse(body: bytes, include_usage: bool) -> list[bytes]:
    """The SSE events (ending with ``data: [DONE]``) of a whole chat or text completion."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError("cached answer is not JSON") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list):
        raise ValueError("cached answer has no choices; only completions can be streamed")
    text = doc.get("object") == "text_completion"
    head: dict[str, Any] = {
        "id": doc.get("id", ""),
        "object": "text_completion" if text else "chat.completion.chunk",
        "created": doc.get("created", 0),
        "model": doc.get("model", ""),
    }
    if doc.get("system_fingerprint") is not None:
        head["system_fingerprint"] = doc["system_fingerprint"]
    if include_usage:
        head["usage"] = None
    events: list[bytes] = []
    for choice in sorted(doc["choices"], key=lambda c: c.get("index", 0)):
        pieces = _text_pieces(choice) if text else _chat_pieces(choice)
        events += [data_event({**head, "choices": [p]}) for p in pieces]
    usage = doc.get("usage")
    if include_usage and usage is not None:
        events.append(data_event({**head, "choices": [], "usage": usage}))
    events.append(DONE)
    return events


def _chat_pieces(choice: dict[str, Any]) -> list[dict[str, Any]]:
    i = choice.get("index", 0)
    msg = choice.get("message") or {}

    def piece(
        delta: dict[str, Any], finish: str | None = None, logprobs: Any = None
    ) -> dict[str, Any]:
        return {"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}

    content = msg.get("content")
    out = [
        piece(
            {
                "role": msg.get("role", "assistant"),
                "content": "" if isinstance(content, str) else None,
            }
        )
    ]
    for name in ("reasoning_content", "reasoning", "refusal"):
        if msg.get(name):
            out.append(piece({name: msg[name]}))
    if content:
        out.append(piece({"content": content}, logprobs=choice.get("logprobs")))
    for j, tc in enumerate(msg.get("tool_calls") or ()):
        fn = tc.get("function") or {}
        first = {
            "index": j,
            "id": tc.get("id"),
            "type": tc.get("type", "function"),
            "function": {"name": fn.get("name", ""), "arguments": ""},
        }
        out.append(piece({"tool_calls": [first]}))
        if fn.get("arguments"):
            out.append(
                piece({"tool_calls": [{"index": j, "function": {"arguments": fn["arguments"]}}]})
            )
    if msg.get("function_call"):
        out.append(piece({"function_call": msg["function_call"]}))
    out.append(piece({}, finish=choice.get("finish_reason") or "stop"))
    return out


def _text_pieces(choice: dict[str, Any]) -> list[dict[str, Any]]:
    i = choice.get("index", 0)
    return [
        {
            "text": choice.get("text") or "",
            "index": i,
            "logprobs": choice.get("logprobs"),
            "finish_reason": None,
        },
        {
            "text": "",
            "index": i,
            "logprobs": None,
            "finish_reason": choice.get("finish_reason") or "stop",
        },
    ]


# ---------------------------------------------------------------- events -> whole


class _Choice:
    __slots__ = ("role", "parts", "tools", "function_call", "logprobs", "finish")

    def __init__(self) -> None:
        self.role = "assistant"
        self.parts: dict[
            str, list[str]
        ] = {}  # content / reasoning_content / reasoning / refusal / text
        self.tools: dict[int, dict[str, Any]] = {}
        self.function_call: dict[str, str] | None = None
        self.logprobs: dict[str, Any] | None = None
        self.finish: str | None = None

    def add_text(self, name: str, value: Any) -> None:
        if isinstance(value, str) and value:
            self.parts.setdefault(name, []).append(value)

    def add_logprobs(self, lp: Any) -> None:
        if not isinstance(lp, dict):
            return
        if self.logprobs is None:
            self.logprobs = {}
        for k, v in lp.items():
            if isinstance(v, list):
                self.logprobs.setdefault(k, []).extend(v)
            elif k not in self.logprobs:
                self.logprobs[k] = v

    def add_tool(self, tc: dict[str, Any]) -> None:
        slot = self.tools.setdefault(
            tc.get("index", 0), {"id": None, "type": "function", "name": [], "args": []}
        )
        if tc.get("id"):
            slot["id"] = tc["id"]
        if tc.get("type"):
            slot["type"] = tc["type"]
        fn = tc.get("function") or {}
        if fn.get("name"):
            slot["name"].append(fn["name"])
        if fn.get("arguments"):
            slot["args"].append(fn["arguments"])

    def joined(self, name: str) -> str | None:
        p = self.parts.get(name)
        return "".join(p) if p else None


class StreamAssembler:
    """Feed every event of a streamed chat or text completion; ``result()`` gives the whole
    answer's JSON, or None if the stream was incomplete, carried an error, or was not one."""

    def __init__(self) -> None:
        self._head: dict[str, Any] | None = None
        self._text = False
        self._choices: dict[int, _Choice] = {}
        self._usage: Any = None
        self._broken = False

    def feed(self, event: bytes) -> None:
        reader = SSEReader()
        reader.feed(event if event.endswith(b"\n\n") else event + b"\n\n")
        while (one := reader.next()) is not None:
            payload = data_of(one).strip()
            if payload == b"[DONE]":
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                self._broken = True
                continue
            try:
                self._chunk(chunk)
            except (AttributeError, TypeError, ValueError):
                # an upstream's chunk of another shape ("choices": "x", a delta that is a
                # list): relayed as it is, but not something to cache; never a failed stream
                self._broken = True

    def _chunk(self, chunk: Any) -> None:
        if not isinstance(chunk, dict) or "error" in chunk:
            self._broken = True
            return
        if self._head is None:
            self._head = {
                k: chunk[k]
                for k in ("id", "created", "model", "system_fingerprint")
                if chunk.get(k) is not None
            }
            self._text = chunk.get("object") == "text_completion"
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for c in chunk.get("choices") or ():
            st = self._choices.get(c.get("index", 0))
            if st is None:
                st = self._choices[c.get("index", 0)] = _Choice()
            if self._text:
                st.add_text("text", c.get("text"))
            else:
                self._delta(st, c.get("delta") or {})
            st.add_logprobs(c.get("logprobs"))
            if c.get("finish_reason"):
                st.finish = c["finish_reason"]

    @staticmethod
    def _delta(st: _Choice, delta: dict[str, Any]) -> None:
        if delta.get("role"):
            st.role = delta["role"]
        for name in _DELTA_TEXT:
            st.add_text(name, delta.get(name))
        for tc in delta.get("tool_calls") or ():
            st.add_tool(tc)
        fc = delta.get("function_call")
        if fc:
            st.function_call = st.function_call or {"name": "", "arguments": ""}
            st.function_call["name"] += fc.get("name") or ""
            st.function_call["arguments"] += fc.get("arguments") or ""

    def result(self) -> bytes | None:
        if self._broken or self._head is None or not self._choices:
            return None
        if any(c.finish is None for c in self._choices.values()):
            return None
        build = _text_choice if self._text else _chat_choice
        doc: dict[str, Any] = {
            "id": self._head.get("id", ""),
            "object": "text_completion" if self._text else "chat.completion",
            "created": self._head.get("created", 0),
            "model": self._head.get("model", ""),
            "choices": [build(i, self._choices[i]) for i in sorted(self._choices)],
        }
        if "system_fingerprint" in self._head:
            doc["system_fingerprint"] = self._head["system_fingerprint"]
        if self._usage is not None:
            doc["usage"] = self._usage
        return orjson.dumps(doc)


def _chat_choice(i: int, st: _Choice) -> dict[str, Any]:
    content = st.joined("content")
    if content is None and not st.tools and st.function_call is None:
        content = ""  # a plain answer that happened to be empty
    msg: dict[str, Any] = {"role": st.role, "content": content}
    msg["refusal"] = st.joined("refusal")
    for name in ("reasoning_content", "reasoning"):
        if st.parts.get(name):
            msg[name] = st.joined(name)
    if st.tools:
        msg["tool_calls"] = [
            {
                "id": t["id"],
                "type": t["type"],
                "function": {"name": "".join(t["name"]), "arguments": "".join(t["args"])},
            }
            for _, t in sorted(st.tools.items())
        ]
    if st.function_call is not None:
        msg["function_call"] = st.function_call
    return {"index": i, "message": msg, "logprobs": st.logprobs, "finish_reason": st.finish}


def _text_choice(i: int, st: _Choice) -> dict[str, Any]:
    return {
        "index": i,
        "text": st.joined("text") or "",
        "logprobs": st.logprobs,
        "finish_reason": st.finish,
    }
