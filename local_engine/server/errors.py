"""Errors as OpenAI answers them: ``{"error": {"message", "type", "param", "code"}}``.

One handler renders every ``local_engine.errors.EngineError`` (see the tree there) from its
``status``, ``code`` and ``param``; the framework's own errors (unknown route 404, wrong method
405) are mapped to the same shape, and a last-resort handler turns a bug into a JSON 500 (the
traceback goes to the log, never to the client). ``ClientGoneError`` sends nothing: the client
is gone. A stream whose headers went out ends with ``stream_error_event`` instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, cast

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

from local_engine.errors import (
    ClientGoneError,
    ContextLengthError,
    EngineError,
    QueueFullError,
    RequestValidationError,
)
from local_engine.server.encoding import JSONResponse, sse_event

__all__ = [
    "RETRY_AFTER_SECONDS",
    "error_body",
    "error_response",
    "install_error_handlers",
    "invalid",
    "stream_error_event",
    "too_long",
]

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    503: "service_unavailable_error",
}


def invalid(message: str, param: str | None = None) -> RequestValidationError:
    return RequestValidationError(message, param=param)


def too_long(message: str, param: str) -> ContextLengthError:
    return ContextLengthError(message, param=param)


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _TYPE_BY_STATUS.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = error_body(status, message, param=param, code=code)
    return JSONResponse(body, status_code=status, headers=headers)


def _message(exc: EngineError) -> str:
    return exc.message or type(exc).__name__


def stream_error_event(exc: EngineError) -> bytes:
    """The in-band SSE event that ends a stream whose headers already went out."""
    return sse_event(error_body(exc.status, _message(exc), param=exc.param, code=exc.code))


async def _engine_error(_: Request, raised: Exception) -> Response:
    exc = cast(EngineError, raised)  # registered for EngineError only
    if isinstance(exc, ClientGoneError):
        return Response(status_code=exc.status)  # uvicorn drops it: the connection is closed
    headers = None
    if isinstance(exc, QueueFullError):
        headers = {"Retry-After": str(max(RETRY_AFTER_SECONDS, math.ceil(exc.retry_after)))}
    if exc.status >= 500:
        logger.warning("%s: %s", type(exc).__name__, exc, exc_info=exc.__cause__)
    return error_response(
        exc.status, _message(exc), param=exc.param, code=exc.code, headers=headers
    )


async def _http_error(_: Request, raised: Exception) -> Response:
    exc = cast(HTTPException, raised)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def _unexpected(_: Request, exc: Exception) -> Response:
    # Starlette's ServerErrorMiddleware logs the traceback and re-raises after this answer, and
    # uvicorn then closes the connection: say so, or a client would reuse it and be reset
    return error_response(
        500,
        "internal error in the engine server (logged)",
        code="internal",
        headers={"connection": "close"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
