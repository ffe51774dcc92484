"""Read a request body into its typed model: bounded in size and time, strict JSON.

The size is checked against ``Content-Length`` before a byte is read, and again while reading
(chunked bodies); the whole body must arrive within ``body_timeout_s``. orjson parses it, which
refuses what would break later stages: NaN/Infinity, numbers that overflow a double, invalid
UTF-8 and lone surrogates (tokenizers and JSON encoders choke on them).
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from local_engine.errors import (
    ClientGoneError,
    RequestTimeoutError,
    RequestTooLargeError,
    RequestValidationError,
)
from local_engine.server.limits import ServerLimits

__all__ = ["read_body"]

M = TypeVar("M", bound=BaseModel)


def _too_large(limits: ServerLimits) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"the request body is over this server's {limits.max_body_bytes} byte limit"
    )


async def _read_bytes(request: Request, limits: ServerLimits) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _too_large(limits)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise _too_large(limits)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeoutError(
            f"the request body did not arrive within {limits.body_timeout_s:g} s"
        ) from None
    except ClientDisconnect:
        raise ClientGoneError("the client disconnected while sending the body") from None
    return b"".join(chunks)


def _param(loc: tuple[int | str, ...]) -> str | None:
    return ".".join(str(p) for p in loc) or None


async def read_body(request: Request, model: type[M], limits: ServerLimits) -> M:
    raw = await _read_bytes(request, limits)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestValidationError("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        param = _param(first["loc"])
        message = f"{param}: {first['msg']}" if param else first["msg"]
        raise RequestValidationError(message, param=param) from None
