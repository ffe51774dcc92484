"""The last-resort handler: one wrapper around ``send`` that knows how far the response got.

Starlette's ``ServerErrorMiddleware`` pattern, for raw ASGI. ``ResponseGuard.send`` notes when
``http.response.start`` went out (and whether it was an event stream) and when the body ended;
it refuses a second start. When a handler raises something nobody handled, ``fail`` answers in
the only way still open:

    nothing sent yet        -> 500 with OpenAI's error JSON (no internals in it)
    SSE headers sent        -> an in-band error event, ``[DONE]``, and the stream closed
    other response started  -> the body ended where it was (the client sees a short body)
    response complete       -> nothing
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.errors import GatewayError
from gateway.server.http import end_stream_with_error, send_error

__all__ = ["InternalError", "ResponseAlreadyStarted", "ResponseGuard"]

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]


class InternalError(GatewayError):
    """What the client is told about a fault of ours; the cause goes to the log only."""

    default_code = "internal_error"


class ResponseAlreadyStarted(RuntimeError):
    """A second ``http.response.start`` for one request: a bug, never sent."""


INTERNAL = InternalError("the gateway failed to handle this request; it has been logged")


class ResponseGuard:
    __slots__ = ("_send", "started", "streaming", "finished")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False  # http.response.start went out
        self.streaming = False  # ... as text/event-stream
        self.finished = False  # the last body message went out

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise ResponseAlreadyStarted("a second response start for one request")
            self.started = True
            self.streaming = any(
                k == b"content-type" and v.startswith(b"text/event-stream")
                for k, v in message.get("headers", ())
            )
        elif kind == "http.response.body" and not message.get("more_body", False):
            self.finished = True
        await self._send(message)

    async def fail(self, error: GatewayError = INTERNAL) -> None:
        """Answer after an unhandled exception, as far as the response allows."""
        if self.finished:
            return
        if not self.started:
            await send_error(self.send, error)
            return
        if self.streaming:
            await end_stream_with_error(self.send, error)
            return
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})
