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

__all__ = ["MAX_JSON_DEPTH", "nesting_depth", "read_body"]

M = TypeVar("M", bound=BaseModel)
# Deeper JSON is refused: chat templates re-encode tool schemas with json.dumps, which recurses
# (1,000 levels raise RecursionError); no OpenAI request needs more than a few dozen.
MAX_JSON_DEPTH = 64


def nesting_depth(value: object, limit: int = MAX_JSON_DEPTH) -> int:
    """Depth of nested lists/dicts (a scalar is 0), counted without recursion; stops past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            stack.extend((child, depth + 1) for child in item)
    return deepest


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
    if nesting_depth(data) > MAX_JSON_DEPTH:
        raise RequestValidationError(f"the body is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        param = _param(first["loc"])
        message = f"{param}: {first['msg']}" if param else first["msg"]
        raise RequestValidationError(message, param=param) from None
