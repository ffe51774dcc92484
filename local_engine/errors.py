"""The local engine's one exception hierarchy.

    EngineError                  500  something went wrong inside the engine
    ├── RequestValidationError   400  the request cannot be served as asked (also a ValueError)
    │   ├── ContextLengthError   400  prompt + max_tokens cannot fit the context window
    │   └── ChatTemplateError    400  the conversation cannot be rendered by this model's template
    ├── RequestTooLargeError     413  the body is over the server's limit
    ├── RequestTimeoutError      408  the body did not arrive in time
    ├── ModelNotFoundError       404  the request names a model this server does not serve
    ├── ClientGoneError          499  the client disconnected; nothing is sent back
    ├── QueueFullError           503  the waiting queue is at ``max_waiting``; retry after ``retry_after`` s
    ├── EngineUnavailableError   503  the engine is not healthy (``/health``)
    ├── StepFailedError          500  a step failed for this request; the engine goes on serving
    │                                 the others (``__cause__`` holds the original error)
    ├── EngineDeadError          500  the step loop crashed; ``__cause__`` holds the original error
    └── start-up errors          500  CheckpointError, ModelConfigError, WeightLoadError, ...
                                      (defined next to the code that raises them)

``status`` is the HTTP status the server answers with, ``code`` and ``param`` go into OpenAI's
error body; ``server/errors.py`` has the one handler that renders them. Lower-library errors
(torch, tokenizers, jinja2, pydantic) are mapped to these at the edge with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ChatTemplateError",
    "ClientGoneError",
    "ContextLengthError",
    "EngineDeadError",
    "EngineError",
    "EngineUnavailableError",
    "ModelNotFoundError",
    "QueueFullError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "RequestValidationError",
    "StepFailedError",
]

DEFAULT_RETRY_AFTER_S = 1.0


class EngineError(Exception):
    status: ClassVar[int] = 500
    default_code: ClassVar[str | None] = None
    default_param: ClassVar[str | None] = None

    def __init__(self, message: str = "", *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param if param is not None else self.default_param
        self.code = code if code is not None else self.default_code


class RequestValidationError(EngineError, ValueError):
    status = 400


class ContextLengthError(RequestValidationError):
    default_code = "context_length_exceeded"  # OpenAI's code; the SDK does not retry a 400


class ChatTemplateError(RequestValidationError):
    default_param = "messages"


class RequestTooLargeError(EngineError):
    status = 413
    default_code = "request_too_large"


class RequestTimeoutError(EngineError):
    status = 408
    default_code = "request_timeout"


class ModelNotFoundError(EngineError):
    status = 404
    default_code = "model_not_found"
    default_param = "model"


class ClientGoneError(EngineError):
    status = 499  # nginx's "client closed request": logged, never sent


class QueueFullError(EngineError):
    status = 503
    default_code = "queue_full"

    def __init__(self, message: str, retry_after: float = DEFAULT_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineUnavailableError(EngineError):
    status = 503
    default_code = "engine_unhealthy"


class StepFailedError(EngineError):
    status = 500
    default_code = "step_failed"


class EngineDeadError(EngineError):
    status = 500
    default_code = "engine_dead"
