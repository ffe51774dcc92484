"""Minimal ASGI plumbing for the hot path: read a bounded body, send bytes, stream SSE.

The gateway speaks raw ASGI instead of going through a framework's request/response
objects: on a pass-through path those objects cost more than the rest of the gateway.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from typing import Any

from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    RequestTimeoutError,
    RequestTooLargeError,
    ServerBusyError,
)
from gateway.sse import DONE, frame

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


class BodyBudget:
    """Bytes of request bodies this process holds at once, across requests.

    ``read_body`` charges each chunk as it arrives (a slow sender holds what it sent so far);
    the caller of a successful ``read_body`` owns ``len(body)`` and gives it back with
    ``release`` when the request ends.
    """

    __slots__ = ("in_use",)

    def __init__(self) -> None:
        self.in_use = 0

    def take(self, n: int, limit: int) -> None:
        if self.in_use + n > limit:
            raise ServerBusyError(
                "the gateway holds too many request bodies at once; retry shortly",
                retry_after=1.0,
                should_retry=True,
            )
        self.in_use += n

    def release(self, n: int) -> None:
        self.in_use -= n


async def read_body(
    receive,
    limit: int,
    content_length: str | None,
    *,
    timeout_s: float | None = None,
    budget: BodyBudget | None = None,
    budget_limit: int = 0,
) -> bytes:
    """The whole body, at most ``limit`` bytes, within ``timeout_s`` (else 408), charged to
    ``budget`` up to ``budget_limit`` bytes in all (else 503)."""
    if content_length is not None:
        try:
            n = int(content_length)
        except ValueError:
            raise InvalidRequestError("invalid Content-Length header") from None
        if n > limit:
            raise RequestTooLargeError(f"request body is {n} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    raise ClientDisconnected
                chunk = msg.get("body", b"")
                if chunk:
                    if size + len(chunk) > limit:
                        raise RequestTooLargeError(
                            f"request body exceeds the limit of {limit} bytes"
                        )
                    if budget is not None:
                        budget.take(len(chunk), budget_limit)
                    size += len(chunk)
                    chunks.append(chunk)
                if not msg.get("more_body"):
                    break
    except TimeoutError:
        if budget is not None:
            budget.release(size)
        raise RequestTimeoutError(
            f"the request body took longer than {timeout_s:g} s to arrive"
        ) from None
    except BaseException:
        if budget is not None:
            budget.release(size)
        raise
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


async def end_body(send, last: bytes = b"") -> None:
    """The end of a streamed body, with its ``last`` bytes: one write, not two."""
    await send({"type": "http.response.body", "body": last, "more_body": False})


async def end_stream_with_error(send, exc: GatewayError) -> None:
    """After SSE headers went out, an error can only go in-band: an OpenAI-style error event
    (the SDK raises APIError on it), ``[DONE]``, and the end of the stream."""
    await end_body(send, frame(exc.to_json()) + DONE)
