"""A deterministic OpenAI-compatible upstream for tests and the benchmark.

Answers echo the request so tests can check what the upstream received:
chat content is ``echo: <last user text>`` (JSON ``{"echo": ...}`` under ``response_format``),
a request with ``tools`` gets one tool call (id ``call_mock_0``, name of the first or chosen
tool, arguments ``{"echo": <text>}``). Token counts are word counts. Faults come from the
shared ``MockControl`` (status + Retry-After, delay, dropped connection, broken stream).

``POST /v1/responses`` speaks the Responses API natively (as OpenAI and vLLM do), whole or
streamed: the answer is one message item ``echo: <last user input text>``, preceded by a
reasoning item (id ``rs_mock_<n>``, a summary, ``encrypted_content`` when ``include`` asks for
``reasoning.encrypted_content``) when the request has ``reasoning``. Like OpenAI, a model
that does not reason (``gpt-4o...``, ``gpt-4.1...``) answers 400 to ``reasoning``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from tests.support.servers import (
    MockControl,
    RecordedRequest,
    content_text,
    drop_connection,
    public_headers,
    running,
    stall_until_closed,
    word_count,
)

__all__ = ["create_app", "running_mock_openai", "reply_text", "TOOL_CALL_ID"]

TOOL_CALL_ID = "call_mock_0"
CREATED = 1_700_000_000
EMBED_DIM = 8
NO_REASONING = re.compile(r"gpt-4(o|\.1)")  # models OpenAI refuses `reasoning` for
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


def reply_text(body: dict) -> str:
    """The text a chat request's answer echoes: its last user message's text."""
    users = [m for m in body.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
    return content_text(users[-1].get("content")) if users else ""


def _tool_name(body: dict) -> str | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        return choice.get("function", {}).get("name")
    return tools[0].get("function", {}).get("name")


def _chat_answer(body: dict) -> tuple[dict, str]:
    """(assistant message, finish_reason)."""
    text = reply_text(body)
    tool = _tool_name(body)
    if tool is not None:
        call = {
            "id": TOOL_CALL_ID,
            "type": "function",
            "function": {"name": tool, "arguments": json.dumps({"echo": text})},
        }
        return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    fmt = (body.get("response_format") or {}).get("type")
    content = (
        json.dumps({"echo": text}) if fmt in ("json_object", "json_schema") else f"echo: {text}"
    )
    return {"role": "assistant", "content": content}, "stop"


def _usage(body: dict, completion: str) -> dict:
    prompt = " ".join(
        content_text(m.get("content")) for m in body.get("messages", []) if isinstance(m, dict)
    )
    if "prompt" in body:
        prompt = (
            body["prompt"]
            if isinstance(body["prompt"], str)
            else " ".join(map(str, body["prompt"]))
        )
    p, c = word_count(prompt), word_count(completion)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _error(
    status: int, message: str, retry_after: str | None = None, body: bytes | None = None
) -> web.Response:
    payload = (
        body
        or json.dumps(
            {
                "error": {
                    "message": message,
                    "type": ERROR_TYPES.get(status, "server_error"),
                    "param": None,
                    "code": None,
                }
            }
        ).encode()
    )
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return web.Response(
        status=status, body=payload, content_type="application/json", headers=headers
    )


def _embedding(text: str, dim: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    v = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(dim)]
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


def content_text_of_input(content: Any) -> str:
    """The text of a Responses message item's content (a string, or input/output_text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and p.get("type") in ("input_text", "output_text")
        )
    return ""


def _responses_events(done: dict) -> list[bytes]:
    """The Responses event sequence of a finished ``response`` (reasoning, then the message)."""
    seq = iter(range(10_000))

    def ev(kind: str, **data: Any) -> bytes:
        payload = {"type": kind, **data, "sequence_number": next(seq)}
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

    start = {**done, "status": "in_progress", "output": [], "usage": None}
    events = [ev("response.created", response=start), ev("response.in_progress", response=start)]
    for i, item in enumerate(done["output"]):
        if item["type"] == "reasoning":
            events.append(ev("response.output_item.added", output_index=i, item=item))
            events.append(ev("response.output_item.done", output_index=i, item=item))
            continue
        text = item["content"][0]["text"]
        head = {**item, "status": "in_progress", "content": []}
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": item["id"], "output_index": i, "content_index": 0}
        events.append(ev("response.output_item.added", output_index=i, item=head))
        events.append(ev("response.content_part.added", **where, part=part))
        for j, w in enumerate(text.split(" ")):
            events.append(ev("response.output_text.delta", **where, delta=w if j == 0 else " " + w))
        events.append(ev("response.output_text.done", **where, text=text))
        events.append(ev("response.content_part.done", **where, part=item["content"][0]))
        events.append(ev("response.output_item.done", output_index=i, item=item))
    events.append(ev("response.completed", response=done))
    return events


def create_app(control: MockControl) -> web.Application:
    counter = {"n": 0}

    def next_id(prefix: str) -> str:
        counter["n"] += 1
        return f"{prefix}-mock-{counter['n']}"

    async def admit(request: web.Request) -> tuple[dict | None, web.StreamResponse | None, Any]:
        """Record the request, apply faults and auth; returns (body, early response, fault)."""
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        auth = request.headers.get("Authorization", "")
        auth_ok = control.api_key is None or auth == f"Bearer {control.api_key}"
        control.record(
            RecordedRequest(
                request.method, request.path, public_headers(request.headers), body, raw, auth_ok
            )
        )
        fault = control.take_fault()
        delay = control.delay_s + (fault.delay_s if fault else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if fault is not None and fault.drop:
            await drop_connection(request)
        if fault is not None and fault.status is not None:
            return (
                body,
                _error(fault.status, f"mock failure {fault.status}", fault.retry_after, fault.body),
                fault,
            )
        if not auth_ok:
            return body, _error(401, "Incorrect API key provided"), fault
        if request.method == "POST" and not isinstance(body, dict):
            return body, _error(400, "body must be a JSON object"), fault
        return body, None, fault

    async def sse(request: web.Request, chunks: list[dict], fault) -> web.StreamResponse:
        events = [b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks]
        return await sse_events(request, events, fault, b"data: [DONE]\n\n")

    async def sse_events(
        request: web.Request, events: list[bytes], fault, tail: bytes = b""
    ) -> web.StreamResponse:
        """Encoded events, the fault's drop or stall before event ``i`` applied, then ``tail``."""
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        for i, event in enumerate(events):
            if (
                fault is not None
                and fault.stream_fail_after is not None
                and i >= fault.stream_fail_after
            ):
                await drop_connection(request)
            if (
                fault is not None
                and fault.stream_stall_after is not None
                and i >= fault.stream_stall_after
            ):
                await stall_until_closed(request)
            await resp.write(event)
        if tail:
            await resp.write(tail)
        await resp.write_eof()
        return resp

    async def chat(request: web.Request) -> web.StreamResponse:
        body, early, fault = await admit(request)
        if early is not None:
            return early
        message, finish = _chat_answer(body if control.tool_calls else {**body, "tools": None})
        completion = message.get("content") or json.dumps(
            [c["function"] for c in message.get("tool_calls", [])]
        )
        usage = _usage(body, completion)
        cid, model = next_id("chatcmpl"), body.get("model", "mock-model")
        if not body.get("stream"):
            choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            return web.json_response(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                    "system_fingerprint": "fp_mock",
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        head = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_mock",
        }
        deltas: list[dict] = [{"role": "assistant", "content": ""}]
        if "tool_calls" in message:
            call = message["tool_calls"][0]
            args = call["function"]["arguments"]
            deltas.append(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""},
                        }
                    ]
                }
            )
            half = len(args) // 2
            deltas += [
                {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}
                for part in (args[:half], args[half:])
            ]
        else:
            words = message["content"].split(" ")
            deltas += [{"content": w if i == 0 else " " + w} for i, w in enumerate(words)]
        extra = {"usage": None} if include_usage else {}
        chunks = [
            head
            | {"choices": [{"index": 0, "delta": d, "finish_reason": None, "logprobs": None}]}
            | extra
            for d in deltas
        ]
        chunks.append(
            head
            | {"choices": [{"index": 0, "delta": {}, "finish_reason": finish, "logprobs": None}]}
            | extra
        )
        if include_usage:
            chunks.append(head | {"choices": [], "usage": usage})
        return await sse(request, chunks, fault)

    async def completions(request: web.Request) -> web.StreamResponse:
        body, early, fault = await admit(request)
        if early is not None:
            return early
        prompt = body.get("prompt", "")
        text = "echo: " + (prompt if isinstance(prompt, str) else " ".join(map(str, prompt)))
        usage = _usage(body, text)
        cid, model = next_id("cmpl"), body.get("model", "mock-model")
        head = {"id": cid, "object": "text_completion", "created": CREATED, "model": model}
        if not body.get("stream"):
            return web.json_response(
                head
                | {
                    "choices": [
                        {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
                    ],
                    "usage": usage,
                }
            )
        chunks = [
            head | {"choices": [{"index": 0, "text": w, "finish_reason": None, "logprobs": None}]}
            for w in text.split(" ")
        ]
        chunks.append(
            head
            | {"choices": [{"index": 0, "text": "", "finish_reason": "stop", "logprobs": None}]}
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append(head | {"choices": [], "usage": usage})
        return await sse(request, chunks, fault)

    async def embeddings(request: web.Request) -> web.StreamResponse:
        body, early, _ = await admit(request)
        if early is not None:
            return early
        inputs = body.get("input", "")
        texts = inputs if isinstance(inputs, list) else [inputs]
        dim = int(body.get("dimensions") or EMBED_DIM)
        data = [
            {"object": "embedding", "index": i, "embedding": _embedding(str(t), dim)}
            for i, t in enumerate(texts)
        ]
        tokens = sum(word_count(str(t)) for t in texts)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "mock-embed"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def responses(request: web.Request) -> web.StreamResponse:
        body, early, fault = await admit(request)
        if early is not None:
            return early
        if body.get("reasoning") is not None and NO_REASONING.match(str(body.get("model"))):
            return _error(
                400, "Unsupported parameter: 'reasoning.effort' is not supported with this model."
            )
        items = body.get("input")
        items = [{"role": "user", "content": items}] if isinstance(items, str) else items or []
        users = [it for it in items if isinstance(it, dict) and it.get("role") == "user"]
        text = content_text_of_input(users[-1].get("content")) if users else ""
        n = next_id("resp").rsplit("-", 1)[1]
        rid, model = f"resp_mock_{n}", body.get("model", "mock-model")
        output: list[dict] = []
        if body.get("reasoning"):
            reasoning = {
                "type": "reasoning",
                "id": f"rs_mock_{n}",
                "summary": [{"type": "summary_text", "text": f"thought about {text}"}],
            }
            if "reasoning.encrypted_content" in (body.get("include") or []):
                reasoning["encrypted_content"] = f"enc_mock_{n}"
            output.append(reasoning)
        answer = f"echo: {text}"
        message = {
            "type": "message",
            "id": f"msg_mock_{n}",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": answer, "annotations": []}],
        }
        output.append(message)
        prompt = " ".join(
            content_text_of_input(it.get("content")) for it in items if isinstance(it, dict)
        )
        p, c = word_count(prompt), word_count(answer)
        usage = {
            "input_tokens": p,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": c,
            "output_tokens_details": {"reasoning_tokens": 2 if body.get("reasoning") else 0},
            "total_tokens": p + c,
        }
        done = {
            "id": rid,
            "object": "response",
            "created_at": CREATED,
            "status": "completed",
            "model": model,
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "store": body.get("store", True),
            "usage": usage,
        }
        if not body.get("stream"):
            return web.json_response(done)
        return await sse_events(request, _responses_events(done), fault)

    async def models(request: web.Request) -> web.StreamResponse:
        _, early, _ = await admit(request)
        if early is not None:
            return early
        data = [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "mock"}
            for m in control.models
        ]
        return web.json_response({"object": "list", "data": data})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/responses", responses)
    return app


@contextmanager
def running_mock_openai(control: MockControl | None = None) -> Iterator[tuple[str, MockControl]]:
    """Yields (base_url ending in /v1, control)."""
    control = control or MockControl()
    with running(create_app(control)) as base:
        yield base + "/v1", control
