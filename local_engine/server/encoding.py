"""Bytes on the wire: orjson JSON bodies, server-sent events, and the fields every OpenAI
completion object opens with."""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.responses import Response

__all__ = ["SSE_DONE", "JSONResponse", "completion_head", "sse_event"]

SSE_DONE = b"data: [DONE]\n\n"


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def sse_event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def completion_head(request_id: str, obj: str, model: str) -> dict[str, Any]:
    """``id``, ``object``, ``created``, ``model``: how a completion object (or each chunk of a
    stream: ``created`` is the stream's start) begins; the caller adds ``choices``/``usage``."""
    return {"id": request_id, "object": obj, "created": int(time.time()), "model": model}
