"""A backend that answers from a script: for unit tests of routing, retries and the pipeline.

    fake = FakeBackend("local", self_hosted=True)
    fake.fail(UpstreamUnavailableError("down", upstream_status=503), times=2)  # then answers
    fake.reply("hi there", prompt_tokens=3, completion_tokens=2)
    fake.fail_mid_stream(after_events=2)
    ...
    fake.calls  # every UpstreamRequest it received, in order

Each call consumes the next scripted step; with the script empty it answers with a
deterministic OpenAI-format reply (``default_content``). Answers are real OpenAI wire
format (JSON bytes, SSE events), so code under test sees what a real adapter returns.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

from gateway.backends.base import Backend, UpstreamRequest, UpstreamResponse, UpstreamStream, Usage
from gateway.errors import UpstreamError
from gateway.sse import DONE, data_event

__all__ = ["FakeBackend", "FakeReply", "FakeStream"]


@dataclass(slots=True)
class FakeReply:
    content: str
    prompt_tokens: int = 1
    completion_tokens: int = 1
    model: str | None = None
    fail_after_events: int | None = None  # streaming: raise after this many events
    error: UpstreamError | None = None  # raised mid-stream


class FakeStream(UpstreamStream):
    def __init__(
        self,
        events: list[bytes],
        model: str,
        usage: Usage,
        fail_after: int | None,
        error: UpstreamError | None,
    ) -> None:
        self.model = model
        self.usage = None
        self._events = events
        self._final_usage = usage
        self._fail_after = fail_after
        self._error = error
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, event in enumerate(self._events):
            if self._fail_after is not None and i >= self._fail_after:
                raise self._error or UpstreamError("fake stream broke", upstream_status=None)
            yield event
        self.usage = self._final_usage

    async def aclose(self) -> None:
        self.closed = True


class FakeBackend(Backend):
    def __init__(
        self,
        name: str = "fake",
        *,
        model: str = "fake-model",
        self_hosted: bool = False,
        kind: str = "fake",
        latency_s: float = 0.0,
        default_content: str = "fake answer",
        probe_ok: bool = True,
    ) -> None:
        self.name, self.model, self.self_hosted, self.kind = name, model, self_hosted, kind
        self.latency_s = latency_s
        self.default_content = default_content
        self.probe_ok = probe_ok
        self.calls: list[UpstreamRequest] = []
        self.closed = False
        self._script: deque[FakeReply | UpstreamError] = deque()

    # ------------------------------------------------------------ scripting

    def fail(self, error: UpstreamError, times: int = 1) -> FakeBackend:
        self._script.extend([error] * times)
        return self

    def reply(
        self,
        content: str,
        prompt_tokens: int = 1,
        completion_tokens: int = 1,
        model: str | None = None,
    ) -> FakeBackend:
        self._script.append(FakeReply(content, prompt_tokens, completion_tokens, model))
        return self

    def fail_mid_stream(
        self, after_events: int, error: UpstreamError | None = None, content: str = "a b c d e f"
    ) -> FakeBackend:
        self._script.append(FakeReply(content, 1, len(content.split()), None, after_events, error))
        return self

    # ------------------------------------------------------------ the contract

    async def _next(self, request: UpstreamRequest) -> FakeReply:
        self.calls.append(request)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        step = self._script.popleft() if self._script else None
        if isinstance(step, UpstreamError):
            raise step
        return step or FakeReply(self.default_content, 1, len(self.default_content.split()))

    async def complete(self, request: UpstreamRequest) -> UpstreamResponse:
        r = await self._next(request)
        model = r.model or self.model
        usage = Usage(r.prompt_tokens, r.completion_tokens)
        return UpstreamResponse(
            body=orjson.dumps(_whole_body(request, r, model)), model=model, usage=usage
        )

    async def open_stream(self, request: UpstreamRequest) -> UpstreamStream:
        r = await self._next(request)
        model = r.model or self.model
        include_usage = bool((request.body.get("stream_options") or {}).get("include_usage"))
        events = _stream_events(r, model, include_usage)
        return FakeStream(
            events, model, Usage(r.prompt_tokens, r.completion_tokens), r.fail_after_events, r.error
        )

    async def probe(self) -> bool:
        return self.probe_ok

    async def close(self) -> None:
        self.closed = True


def _usage(r: FakeReply) -> dict:
    return {
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "total_tokens": r.prompt_tokens + r.completion_tokens,
    }


def _whole_body(request: UpstreamRequest, r: FakeReply, model: str) -> dict:
    created = int(time.time())
    if request.operation == "embeddings":
        inputs = request.body.get("input")
        n = len(inputs) if isinstance(inputs, list) else 1
        data = [
            {"object": "embedding", "index": i, "embedding": [0.1 * (i + 1), 0.2, 0.3]}
            for i in range(n)
        ]
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": r.prompt_tokens, "total_tokens": r.prompt_tokens},
        }
    if request.operation == "completions":
        choice = {"index": 0, "text": r.content, "finish_reason": "stop", "logprobs": None}
        return {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": _usage(r),
        }
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": r.content},
        "finish_reason": "stop",
    }
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": _usage(r),
    }


def _stream_events(r: FakeReply, model: str, include_usage: bool) -> list[bytes]:
    head = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    deltas = [{"role": "assistant", "content": ""}] + [{"content": w} for w in _pieces(r.content)]
    chunks = [head | {"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append(head | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        chunks.append(head | {"choices": [], "usage": _usage(r)})
    return [data_event(c) for c in chunks] + [DONE]


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]
