"""A fast OpenAI-compatible mock upstream for load tests (loopback only).

Raw asyncio ``Protocol`` on uvloop with httptools' C parser: HTTP/1.1 keep-alive and
pipelined requests, ``Content-Length`` and chunked request bodies. Every answer is a fixed
``chat.completion`` (or ``text_completion`` / embedding list) with ``usage``, built once at
start, so the mock costs a few microseconds per request and the load test measures what sits
in front of it, not the mock. ``"stream": true`` answers with a few SSE chunks (and a usage
chunk when ``stream_options.include_usage`` is set).

    python bench/mock_upstream.py --port 9100 [--cpu 1] [--chunks 8]

Routes: POST /v1/chat/completions, /v1/completions, /v1/embeddings; GET /v1/models, /health.
Also POST /v1/messages (Anthropic Messages) and /v1/responses (OpenAI Responses), whole or
streamed in their own event sequences: the targets of the gateway's native pass-through.
Anything else: 404. A body that is not a JSON object: 400.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import httptools
import orjson

__all__ = ["MockUpstream", "build_answers", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_CHUNKS = 8
MODEL = "mock-model"
CREATED = 1_700_000_000
REPLY_TEXT = "Hello! This is a fixed answer from the mock upstream."
USAGE = {"prompt_tokens": 12, "completion_tokens": 13, "total_tokens": 25}
MAX_BODY_BYTES = 16 * 1024 * 1024


def _response(status: bytes, body: bytes, ctype: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: "
        + ctype
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse_response(events: list[bytes]) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    return (
        head
        + b"".join(_chunk(b"data: " + e + b"\n\n") for e in events)
        + _chunk(b"data: [DONE]\n\n")
        + b"0\r\n\r\n"
    )


def _stream_events(chunks: int, with_usage: bool) -> list[bytes]:
    base = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
    }
    events = [
        orjson.dumps(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            }
        )
    ]
    n = len(REPLY_TEXT)
    for i in range(chunks):  # ``chunks`` content events that together spell REPLY_TEXT
        text = REPLY_TEXT[i * n // chunks : (i + 1) * n // chunks]
        events.append(
            orjson.dumps(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
                }
            )
        )
    events.append(
        orjson.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    )
    if with_usage:
        events.append(orjson.dumps({**base, "choices": [], "usage": USAGE}))
    return events


def _named_sse_response(events: list[tuple[str, dict]]) -> bytes:
    """Anthropic's and the Responses API's dialect: named events, no [DONE]."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    body = b"".join(
        _chunk(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")
        for name, data in events
    )
    return head + body + b"0\r\n\r\n"


def _pieces(chunks: int) -> list[str]:
    n = len(REPLY_TEXT)
    return [REPLY_TEXT[i * n // chunks : (i + 1) * n // chunks] for i in range(chunks)]


def _messages_answers(chunks: int) -> tuple[dict, list[tuple[str, dict]]]:
    """(a whole Anthropic message, the event sequence of the same answer streamed)."""
    usage = {"input_tokens": USAGE["prompt_tokens"], "output_tokens": USAGE["completion_tokens"]}
    msg = {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": REPLY_TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    start = {**msg, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str, dict]] = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    for text in _pieces(chunks):
        delta = {"type": "text_delta", "text": text}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": USAGE["completion_tokens"]},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return msg, events


def _responses_answers(chunks: int) -> tuple[dict, list[tuple[str, dict]]]:
    """(a whole Responses ``response``, the event sequence of the same answer streamed)."""
    item = {
        "type": "message",
        "id": "msg_mock",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": REPLY_TEXT, "annotations": []}],
    }
    usage = {
        "input_tokens": USAGE["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": USAGE["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": USAGE["total_tokens"],
    }
    done = {
        "id": "resp_mock",
        "object": "response",
        "created_at": CREATED,
        "status": "completed",
        "model": MODEL,
        "output": [item],
        "usage": usage,
    }
    seq = iter(range(10_000))

    def ev(kind: str, **data: object) -> tuple[str, dict]:
        return kind, {"type": kind, **data, "sequence_number": next(seq)}

    start = {**done, "status": "in_progress", "output": [], "usage": None}
    where = {"item_id": "msg_mock", "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": []}
    events = [
        ev("response.created", response=start),
        ev("response.in_progress", response=start),
        ev("response.output_item.added", output_index=0, item={**item, "content": []}),
        ev("response.content_part.added", **where, part=part),
    ]
    events += [ev("response.output_text.delta", **where, delta=t) for t in _pieces(chunks)]
    events += [
        ev("response.output_text.done", **where, text=REPLY_TEXT),
        ev("response.content_part.done", **where, part=item["content"][0]),
        ev("response.output_item.done", output_index=0, item=item),
        ev("response.completed", response=done),
    ]
    return done, events


def build_answers(chunks: int = DEFAULT_CHUNKS) -> dict[str, bytes]:
    """Every whole HTTP response the mock can send, keyed by kind; built once."""
    chat = {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY_TEXT},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": USAGE,
    }
    text = {
        "id": "cmpl-mock",
        "object": "text_completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "text": REPLY_TEXT, "finish_reason": "stop", "logprobs": None}],
        "usage": USAGE,
    }
    emb = {
        "object": "list",
        "model": MODEL,
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3, 0.4]}],
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }
    models = {
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": CREATED, "owned_by": "mock"}],
    }
    message, message_events = _messages_answers(chunks)
    response, response_events = _responses_answers(chunks)
    return {
        "messages": _response(b"200 OK", orjson.dumps(message)),
        "messages_stream": _named_sse_response(message_events),
        "responses": _response(b"200 OK", orjson.dumps(response)),
        "responses_stream": _named_sse_response(response_events),
        "chat": _response(b"200 OK", orjson.dumps(chat)),
        "completions": _response(b"200 OK", orjson.dumps(text)),
        "embeddings": _response(b"200 OK", orjson.dumps(emb)),
        "models": _response(b"200 OK", orjson.dumps(models)),
        "health": _response(b"200 OK", b'{"status":"ok"}'),
        "chat_stream": _sse_response(_stream_events(chunks, with_usage=False)),
        "chat_stream_usage": _sse_response(_stream_events(chunks, with_usage=True)),
        "not_found": _response(
            b"404 Not Found",
            b'{"error":{"message":"no such route","type":"invalid_request_error"}}',
        ),
        "bad_request": _response(
            b"400 Bad Request",
            b'{"error":{"message":"body must be a JSON object","type":"invalid_request_error"}}',
        ),
        "too_large": _response(
            b"413 Payload Too Large",
            b'{"error":{"message":"body too large","type":"invalid_request_error"}}',
        ),
    }


POST_ROUTES = {
    b"/v1/chat/completions": "chat",
    b"/v1/completions": "completions",
    b"/v1/embeddings": "embeddings",
    b"/v1/messages": "messages",
    b"/v1/responses": "responses",
}
GET_ROUTES = {b"/v1/models": "models", b"/health": "health"}


class MockUpstream(asyncio.Protocol):
    """One connection. httptools calls the ``on_*`` hooks while ``data_received`` feeds it."""

    __slots__ = ("answers", "transport", "parser", "url", "body", "size", "closing")

    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.size = 0
        self.closing = False

    # asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close()
        except httptools.HttpParserError:
            if not self.closing:
                self.transport.write(self.answers["bad_request"])
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # httptools hooks

    def on_message_begin(self) -> None:
        self.url, self.body, self.size = b"", [], 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size <= MAX_BODY_BYTES:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.transport is None or self.closing:
            return
        self.transport.write(self._answer())
        if not self.parser.should_keep_alive():
            self._close()

    # the answer

    def _answer(self) -> bytes:
        path = self.url.split(b"?", 1)[0]
        method = self.parser.get_method()
        if method == b"GET":
            return self.answers[GET_ROUTES.get(path, "not_found")]
        kind = POST_ROUTES.get(path) if method == b"POST" else None
        if kind is None:
            return self.answers["not_found"]
        if self.size > MAX_BODY_BYTES:
            return self.answers["too_large"]
        try:
            req = orjson.loads(b"".join(self.body))
        except orjson.JSONDecodeError:
            return self.answers["bad_request"]
        if not isinstance(req, dict):
            return self.answers["bad_request"]
        if kind == "chat" and req.get("stream") is True:
            so = req.get("stream_options")
            usage = isinstance(so, dict) and so.get("include_usage") is True
            return self.answers["chat_stream_usage" if usage else "chat_stream"]
        if kind in ("messages", "responses") and req.get("stream") is True:
            return self.answers[kind + "_stream"]
        return self.answers[kind]

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


async def serve(host: str, port: int, chunks: int = DEFAULT_CHUNKS) -> asyncio.AbstractServer:
    """Start listening; the caller owns the returned server."""
    answers = build_answers(chunks)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: MockUpstream(answers), host, port, backlog=4096, reuse_address=True
    )


async def _main(args: argparse.Namespace) -> None:
    server = await serve(args.host, args.port, args.chunks)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"mock upstream on http://{args.host}:{args.port}/v1", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cpu", type=int, help="pin the process to this CPU core")
    p.add_argument(
        "--chunks", type=int, default=DEFAULT_CHUNKS, help="content chunks per streamed answer"
    )
    args = p.parse_args(argv)
    if args.chunks < 1:
        p.error("--chunks must be at least 1")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    import uvloop

    uvloop.run(_main(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
