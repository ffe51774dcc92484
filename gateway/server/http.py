"""Minimal ASGI plumbing for the hot path: read a bounded body, send bytes, stream SSE.

The gateway speaks raw ASGI instead of going through a framework's request/response
objects: on a pass-through path those objects cost more than the rest of the gateway.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from gateway.errors import GatewayError, InvalidRequestError, RequestTooLargeError

# The longest Retry-After a client is told: an upstream asking for an hour (or for "inf") is
# not a promise the gateway can pass on; its limits and fallbacks change by the minute.
MAX_CLIENT_RETRY_AFTER_S = 60
JSON = b"application/json"
SSE = b"text/event-stream"
Headers = list[tuple[bytes, bytes]]


class ClientDisconnected(Exception):
    """The client went away while we were reading its request."""


def header_map(scope: dict[str, Any]) -> dict[str, str]:
    """Request headers by (lower-case) name. A repeated header's values are joined with ", "
    (RFC 9110 5.3), so a rule sees every value, not just the last one sent."""
    raw = scope["headers"]
    out = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}
    if len(out) != len(raw):
        out = {}
        for k, v in raw:
            name, value = k.decode("latin-1"), v.decode("latin-1")
            out[name] = f"{out[name]}, {value}" if name in out else value
    return out


async def read_body(receive, limit: int, content_length: str | None) -> bytes:
    if content_length is not None:
        try:
            n = int(content_length)
        except ValueError:
            raise InvalidRequestError("invalid Content-Length header") from None
        if n > limit:
            raise RequestTooLargeError(f"request body is {n} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise RequestTooLargeError(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        if not msg.get("more_body"):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def gateway_headers(values: Iterable[tuple[str, str]]) -> Headers:
    return [(k.encode(), v.encode()) for k, v in values]


async def send_bytes(
    send, status: int, body: bytes, content_type: bytes = JSON, extra: Headers | None = None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def retry_after_header(seconds: float) -> bytes:
    """Whole seconds, rounded up, in [1, MAX_CLIENT_RETRY_AFTER_S]; NaN and inf included."""
    if not seconds < MAX_CLIENT_RETRY_AFTER_S:  # also NaN and inf
        return str(MAX_CLIENT_RETRY_AFTER_S).encode()
    return str(max(1, math.ceil(seconds))).encode()


async def send_error(
    send, exc: GatewayError, extra: Headers | None = None, body: bytes | None = None
) -> None:
    """``exc`` as an error answer; ``body`` is its rendering in the caller's protocol
    (default: OpenAI's shape)."""
    headers = list(extra or ())
    if exc.retry_after is not None:
        headers.append((b"retry-after", retry_after_header(exc.retry_after)))
    if exc.should_retry is not None:
        headers.append((b"x-should-retry", b"true" if exc.should_retry else b"false"))
    await send_bytes(send, exc.status, body or exc.to_json(), JSON, headers)


async def start_sse(send, extra: Headers | None = None) -> None:
    headers = [
        (b"content-type", SSE),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def send_chunk(send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def end_body(send) -> None:
    await send({"type": "http.response.body", "body": b"", "more_body": False})
