"""The gateway's one exception hierarchy, and its OpenAI-format rendering.

    GatewayError                      500 api_error
    ├── InvalidRequestError           400 invalid_request_error
    │   ├── ContextLengthError        400 invalid_request_error / context_length_exceeded
    │   └── UntranslatableError       400 invalid_request_error / untranslatable: a Messages or
    │                                     Responses body chat completions cannot carry
    ├── AuthenticationError           401 authentication_error
    ├── PermissionDeniedError         403 permission_error
    │   └── ProvenanceDeniedError     403 permission_error / denied_by_policy (a provenance rule)
    ├── NotFoundError                 404 not_found_error (model_not_found)
    ├── RequestTooLargeError          413 invalid_request_error
    ├── RequestTimeoutError           408 invalid_request_error (request_timeout): slow body
    ├── ServerBusyError               503 server_error (server_busy): bodies in flight at the cap
    ├── RateLimitError                429 rate_limit_error (rate_limit_exceeded / budget_exceeded)
    ├── UpstreamError                 502 upstream_error (bad_gateway)
    │   ├── UpstreamUnavailableError  503 upstream_error (service_unavailable)
    │   │   └── FleetSaturatedError   503 upstream_error (fleet_saturated): healthy but full
    │   └── UpstreamTimeoutError      504 upstream_error (timeout): no answer in time (read)
    │       └── UpstreamConnectTimeoutError  504 (connect_timeout): never reached it
    └── NoBackendError                503 no_backend_available (nothing eligible can serve it)

``should_retry`` becomes the ``x-should-retry`` header the OpenAI SDKs obey before their own
status rules: ``False`` on a 503 that no retry can change (nothing configured can serve the
request), so the SDK does not send it three more times.

Lower-library errors (aiohttp, litellm, redis) are mapped to these at the edge with
``raise ... from exc``; messages never include secrets or upstream credentials.
"""

from __future__ import annotations

from typing import ClassVar

import orjson

__all__ = [
    "GatewayError",
    "InvalidRequestError",
    "ContextLengthError",
    "UntranslatableError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "RequestTooLargeError",
    "RequestTimeoutError",
    "ServerBusyError",
    "RateLimitError",
    "UpstreamError",
    "UpstreamUnavailableError",
    "UpstreamTimeoutError",
    "UpstreamConnectTimeoutError",
    "FleetSaturatedError",
    "NoBackendError",
    "ProvenanceDeniedError",
    "PolicyError",
]


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after
        self.should_retry = should_retry  # None: the client's own rules (by status) decide

    @property
    def retryable(self) -> bool:
        """Whether another attempt (same or another backend) may succeed."""
        return False

    def to_dict(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


class InvalidRequestError(GatewayError):
    status = 400
    type = "invalid_request_error"


class ContextLengthError(InvalidRequestError):
    default_code = "context_length_exceeded"


class UntranslatableError(InvalidRequestError):
    """A well-formed body in the caller's protocol with a part chat completions cannot carry:
    it can go only to a backend taking that protocol natively (``param`` names the part)."""

    default_code = "untranslatable"


class AuthenticationError(GatewayError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status = 403
    type = "permission_error"


class ProvenanceDeniedError(PermissionDeniedError):
    """A team, key or data rule forbids every backend that could serve the request."""

    default_code = "denied_by_policy"

    def __init__(self, message: str, *, rules: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.rules = rules  # e.g. ("team:federal",), for metrics


class NotFoundError(GatewayError):
    status = 404
    type = "not_found_error"
    default_code = "model_not_found"


class RequestTooLargeError(GatewayError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class RequestTimeoutError(GatewayError):
    """The client took longer than server.body_timeout_s to send its body."""

    status = 408
    type = "invalid_request_error"
    default_code = "request_timeout"


class ServerBusyError(GatewayError):
    """This replica holds as many request bodies as server.max_inflight_body_bytes allows."""

    status = 503
    type = "server_error"
    default_code = "server_busy"


class RateLimitError(GatewayError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(GatewayError):
    """An upstream failed. ``upstream_status`` is what it answered (None: no answer)."""

    status = 502
    type = "upstream_error"
    default_code = "bad_gateway"
    # Whether this failure says the backend is unwell (its circuit breaker counts it).
    counts_against_backend: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        body: bytes | None = None,
        detail: str | None = None,
        **kw,
    ) -> None:
        super().__init__(message, **kw)
        self.upstream_status = upstream_status
        # For the log only (library exception names, host:port): never in the client's answer.
        self.detail = detail
        # The upstream's own OpenAI-format error body, relayed as-is for client errors (4xx).
        self.body = body

    @property
    def retryable(self) -> bool:
        s = self.upstream_status
        return s is None or s == 408 or s == 409 or s == 429 or s >= 500


class UpstreamUnavailableError(UpstreamError):
    status = 503
    default_code = "service_unavailable"


class FleetSaturatedError(UpstreamUnavailableError):
    """Every replica of a self-hosted fleet is past its spill-over thresholds: the backend is
    healthy but full. Not retried on it and not counted against its circuit; the pipeline
    moves on to the next candidate (spill-over)."""

    default_code = "fleet_saturated"
    counts_against_backend = False

    @property
    def retryable(self) -> bool:
        return False


class UpstreamTimeoutError(UpstreamError):
    """The upstream took too long. Without an HTTP status (our own read timeout) the request
    was sent and may still be running there: sending it again to the same backend doubles
    the work and the wait, so it is not retried (the next candidate is tried instead).
    An upstream's own 408/504 answer is retried like any other."""

    status = 504
    default_code = "timeout"

    @property
    def retryable(self) -> bool:
        return self.upstream_status is not None and super().retryable


class UpstreamConnectTimeoutError(UpstreamTimeoutError):
    """No connection within connect_timeout_s: nothing was sent, so a retry is safe."""

    default_code = "connect_timeout"

    @property
    def retryable(self) -> bool:
        return True


class NoBackendError(GatewayError):
    status = 503
    type = "no_backend_available"
    default_code = "no_backend_available"


class PolicyError(ValueError):
    """A policy file is invalid. Not an HTTP error: raised at load/reload time."""
