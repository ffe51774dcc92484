"""The local engine's one exception hierarchy.

    EngineError                  500  something went wrong inside the engine
    ├── RequestValidationError   400  the request cannot be served as asked (also a ValueError)
    │                                 (prompt longer than the context window, bad token ids, ...)
    ├── QueueFullError           503  the waiting queue is at ``max_waiting``; retry after ``retry_after`` s
    ├── StepFailedError          500  a step failed for this request; the engine goes on serving
    │                                 the others (``__cause__`` holds the original error)
    └── EngineDeadError          500  the step loop crashed; ``__cause__`` holds the original error

``status`` is the HTTP status the server answers with. Lower-library errors (torch, tokenizers)
are mapped to these at the edge with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "EngineDeadError",
    "EngineError",
    "QueueFullError",
    "RequestValidationError",
    "StepFailedError",
]

DEFAULT_RETRY_AFTER_S = 1.0


class EngineError(Exception):
    status: ClassVar[int] = 500


class RequestValidationError(EngineError, ValueError):
    status = 400


class QueueFullError(EngineError):
    status = 503

    def __init__(self, message: str, retry_after: float = DEFAULT_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StepFailedError(EngineError):
    status = 500


class EngineDeadError(EngineError):
    status = 500
