"""Errors as OpenAI answers them: ``{"error": {"message", "type", "param", "code"}}``.

Tree of what the handlers map (everything else is a bug and surfaces as a 500 from uvicorn)::

    APIError                          -> its own status (400 invalid, 404 unknown model, ...)
    local_engine.errors.EngineError
    ├── QueueFullError                -> 503 + Retry-After (a gateway spills over to another backend)
    ├── RequestValidationError        -> 400
    └── EngineDeadError, others       -> 500
    ChatTemplateError                 -> 400 (bad roles/conversation for this model's template)
    fastapi RequestValidationError    -> 400 (malformed body; OpenAI uses 400, not 422)
    starlette HTTPException           -> its status (unknown route 404, wrong method 405)
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError as BodyValidationError
from starlette.exceptions import HTTPException

from local_engine.errors import EngineError, QueueFullError, RequestValidationError
from local_engine.server.encoding import JSONResponse, sse_event
from local_engine.tokenizer import ChatTemplateError

__all__ = [
    "RETRY_AFTER_SECONDS",
    "APIError",
    "error_body",
    "error_response",
    "install_error_handlers",
    "stream_error_event",
]

RETRY_AFTER_SECONDS = 1
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # OpenAI's code: the SDK will not retry it
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    503: "service_unavailable_error",
}


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPE_BY_STATUS.get(status, "server_error")


def invalid(message: str, param: str | None = None, *, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def error_response(
    status: int,
    message: str,
    *,
    type: str | None = None,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(status, message, type=type, param=param, code=code)
    return JSONResponse(body, status_code=status, headers=headers)


def error_body(
    status: int,
    message: str,
    *,
    type: str | None = None,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": type or _TYPE_BY_STATUS.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def stream_error_event(exc: EngineError) -> bytes:
    """The in-band SSE event that ends a stream whose headers already went out."""
    return sse_event(error_body(exc.status, str(exc), code=type(exc).__name__))


async def _api_error(_: Request, exc: APIError) -> JSONResponse:
    return error_response(exc.status, exc.message, type=exc.type, param=exc.param, code=exc.code)


async def _engine_error(_: Request, exc: EngineError) -> JSONResponse:
    if isinstance(exc, QueueFullError):
        retry_after = max(RETRY_AFTER_SECONDS, math.ceil(exc.retry_after))
        return error_response(
            exc.status,
            str(exc) or "the waiting queue is full",
            code="queue_full",
            headers={"Retry-After": str(retry_after)},
        )
    if isinstance(exc, RequestValidationError):
        return error_response(exc.status, str(exc))
    return error_response(exc.status, f"engine error: {exc}", code=type(exc).__name__)


async def _template_error(_: Request, exc: ChatTemplateError) -> JSONResponse:
    return error_response(400, str(exc), param="messages")


async def _body_error(_: Request, exc: BodyValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    message = (
        f"{param}: {first.get('msg', 'invalid request')}"
        if param
        else first.get("msg", "invalid request")
    )
    return error_response(400, message, param=param)


async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(ChatTemplateError, _template_error)
    app.add_exception_handler(BodyValidationError, _body_error)
    app.add_exception_handler(HTTPException, _http_error)
