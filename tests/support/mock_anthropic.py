"""A deterministic upstream speaking Anthropic's Messages API, so litellm's translation runs for real.

``POST /v1/messages``, whole or streamed (message_start, content_block_start/delta/stop with
text_delta or input_json_delta, message_delta with usage, message_stop). Replies echo the last
user text (``echo: <text>``); with ``tools`` the answer is one tool_use block (id
``toolu_mock_0``, input ``{"echo": <text>}``). With ``thinking`` enabled the answer starts
with a signed thinking block (``thinking_delta`` and ``signature_delta`` when streamed); a
request carrying ``cache_control`` markers reports ``cache_read_input_tokens`` (``CACHED``)
and ``cache_creation_input_tokens`` (``WRITTEN``), as a prompt-caching hit on the first
breakpoint that writes the next would. ``POST /v1/messages/count_tokens`` answers ``{"input_tokens":
count_of(body)}``. Errors use Anthropic's shape
``{"type": "error", "error": {"type", "message"}}``. Faults come from ``MockControl``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from tests.support.servers import (
    Fault,
    MockControl,
    RecordedRequest,
    content_text,
    drop_connection,
    public_headers,
    running,
    word_count,
)

__all__ = [
    "CACHED",
    "COUNT_OVERHEAD",
    "SIGNATURE",
    "TOOL_USE_ID",
    "WRITTEN",
    "count_of",
    "create_app",
    "running_mock_anthropic",
]

TOOL_USE_ID = "toolu_mock_0"
SIGNATURE = "sig_mock_signed"
CACHED = 7  # cache_read_input_tokens reported when the request has cache_control markers
WRITTEN = 5  # cache_creation_input_tokens reported with them (a later breakpoint written)
COUNT_OVERHEAD = 1000  # added to the words by /v1/messages/count_tokens
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _error(
    status: int, message: str, retry_after: str | None = None, body: bytes | None = None
) -> web.Response:
    payload = (
        body
        or json.dumps(
            {
                "type": "error",
                "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
            }
        ).encode()
    )
    headers = {"retry-after": retry_after} if retry_after is not None else None
    return web.Response(
        status=status, body=payload, content_type="application/json", headers=headers
    )


def _answer(body: dict) -> tuple[list[dict], str]:
    """(content blocks, stop_reason)."""
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    text = content_text(users[-1].get("content")) if users else ""
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {}
    thinking = (body.get("thinking") or {}).get("type") == "enabled"
    head = (
        [{"type": "thinking", "thinking": f"mock thought about {text}", "signature": SIGNATURE}]
        if thinking
        else []
    )
    if tools and choice.get("type") != "none":
        name = choice.get("name") if choice.get("type") == "tool" else tools[0]["name"]
        return [
            *head,
            {"type": "tool_use", "id": TOOL_USE_ID, "name": name, "input": {"echo": text}},
        ], "tool_use"
    return [*head, {"type": "text", "text": f"echo: {text}"}], "end_turn"


def _prompt(body: dict) -> str:
    return (
        " ".join(content_text(m.get("content")) for m in body.get("messages") or [])
        + " "
        + content_text(body.get("system", ""))
    )


def count_of(body: dict) -> int:
    """What ``/v1/messages/count_tokens`` answers: the prompt's words plus a fixed overhead
    (``COUNT_OVERHEAD``, as Anthropic counts its own framing), so it never equals an estimate
    by accident."""
    return word_count(_prompt(body)) + COUNT_OVERHEAD


def _event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _stream_events(
    msg_id: str, model: str, blocks: list[dict], stop: str, usage: dict, out_tokens: int
) -> list[bytes]:
    start = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events = [
        _event("message_start", {"type": "message_start", "message": start}),
        _event("ping", {"type": "ping"}),
    ]
    for i, block in enumerate(blocks):
        if block["type"] == "thinking":
            head = {"type": "thinking", "thinking": "", "signature": ""}
            events.append(
                _event(
                    "content_block_start",
                    {"type": "content_block_start", "index": i, "content_block": head},
                )
            )
            for delta in (
                {"type": "thinking_delta", "thinking": block["thinking"]},
                {"type": "signature_delta", "signature": block["signature"]},
            ):
                events.append(
                    _event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": i, "delta": delta},
                    )
                )
        elif block["type"] == "text":
            events.append(
                _event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            words = block["text"].split(" ")
            for j, w in enumerate(words):
                delta = {"type": "text_delta", "text": w if j == 0 else " " + w}
                events.append(
                    _event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": i, "delta": delta},
                    )
                )
        else:
            head = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            events.append(
                _event(
                    "content_block_start",
                    {"type": "content_block_start", "index": i, "content_block": head},
                )
            )
            args = json.dumps(block["input"])
            half = len(args) // 2
            for part in (args[:half], args[half:]):
                delta = {"type": "input_json_delta", "partial_json": part}
                events.append(
                    _event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": i, "delta": delta},
                    )
                )
        events.append(_event("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": out_tokens},
            },
        )
    )
    events.append(_event("message_stop", {"type": "message_stop"}))
    return events


def create_app(control: MockControl) -> web.Application:
    counter = {"n": 0}

    async def receive(request: web.Request) -> tuple[bytes, Any, bool, Fault | None]:
        """The request read and recorded: (raw, parsed body or None, auth ok, the next fault)."""
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        auth_ok = control.api_key is None or request.headers.get("x-api-key") == control.api_key
        control.record(
            RecordedRequest(
                request.method, request.path, public_headers(request.headers), body, raw, auth_ok
            )
        )
        return raw, body, auth_ok, control.take_fault()

    async def admit(request: web.Request) -> tuple[dict | None, web.Response | None]:
        """The request recorded, faults applied: (body, an early answer or None)."""
        _, body, auth_ok, fault = await receive(request)
        if fault is not None and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault is not None and fault.status is not None:
            return body, _error(fault.status, f"mock failure {fault.status}", fault.retry_after)
        if not auth_ok:
            return body, _error(401, "invalid x-api-key")
        if not isinstance(body, dict) or not body.get("messages") or not body.get("model"):
            return body, _error(400, "model and messages are required")
        return body, None

    async def count_tokens(request: web.Request) -> web.Response:
        body, early = await admit(request)
        if early is not None:
            return early
        assert body is not None
        return web.json_response({"input_tokens": count_of(body)})

    async def messages(request: web.Request) -> web.StreamResponse:
        raw, body, auth_ok, fault = await receive(request)
        delay = control.delay_s + (fault.delay_s if fault else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if fault is not None and fault.drop:
            await drop_connection(request)
        if fault is not None and fault.status is not None:
            return _error(
                fault.status, f"mock failure {fault.status}", fault.retry_after, fault.body
            )
        if not auth_ok:
            return _error(401, "invalid x-api-key")
        if not isinstance(body, dict) or "max_tokens" not in body or not body.get("messages"):
            return _error(400, "messages and max_tokens are required")
        counter["n"] += 1
        msg_id = f"msg_mock_{counter['n']}"
        blocks, stop = _answer(body)
        prompt = _prompt(body)
        out_text = " ".join(
            b.get("text") or b.get("thinking") or json.dumps(b.get("input")) for b in blocks
        )
        in_tokens, out_tokens = word_count(prompt), word_count(out_text)
        usage = {"input_tokens": in_tokens}
        if b"cache_control" in raw:
            usage |= {"cache_creation_input_tokens": WRITTEN, "cache_read_input_tokens": CACHED}
        model = body.get("model", "claude-mock")
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": blocks,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {**usage, "output_tokens": out_tokens},
                }
            )
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        for i, event in enumerate(_stream_events(msg_id, model, blocks, stop, usage, out_tokens)):
            if (
                fault is not None
                and fault.stream_fail_after is not None
                and i >= fault.stream_fail_after
            ):
                await drop_connection(request)
            await resp.write(event)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    return app


@contextmanager
def running_mock_anthropic(control: MockControl | None = None) -> Iterator[tuple[str, MockControl]]:
    """Yields (base_url without /v1, as ANTHROPIC_BASE_URL is written; control)."""
    control = control or MockControl()
    with running(create_app(control)) as base:
        yield base, control
