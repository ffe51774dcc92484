"""Bytes on the wire: orjson JSON bodies and server-sent events."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

__all__ = ["SSE_DONE", "JSONResponse", "sse_event"]

SSE_DONE = b"data: [DONE]\n\n"


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def sse_event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
