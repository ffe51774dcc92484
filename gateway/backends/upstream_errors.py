"""Upstream failures -> the gateway's ``UpstreamError`` family, without leaking secrets.

    HTTP 503            -> UpstreamUnavailableError
    HTTP 408, 504       -> UpstreamTimeoutError
    other HTTP >= 400   -> UpstreamError (upstream_status set; .retryable for 408/409/429/5xx)
    refused / reset     -> UpstreamUnavailableError (upstream_status None)
    connect timeouts    -> UpstreamConnectTimeoutError (nothing sent: retried)
    read timeouts       -> UpstreamTimeoutError (upstream_status None: not retried, falls back)

``retry_after`` comes from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date),
parsed defensively: only digits (an optional fraction), clamped to ``MAX_RETRY_AFTER_S``;
anything else (``inf``, ``nan``, ``1e400``, ``-5``, a date beyond the calendar) is ignored.
``body`` keeps the upstream's own error JSON when it is OpenAI-shaped, for relaying.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import aiohttp
import orjson

from gateway.errors import (
    UpstreamConnectTimeoutError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)

__all__ = [
    "class_for_status",
    "connection_error",
    "error_from_response",
    "malformed_event",
    "parse_retry_after",
    "post_checked",
    "scrub",
    "stream_error",
    "timeout_error",
]

log = logging.getLogger("gateway.backends")

SNIPPET_CHARS = 200
# Longest wait an upstream can ask for that we keep as such: beyond it "a long time" is all it
# says, and a float that large (1e400 is inf) must never reach arithmetic or int().
MAX_RETRY_AFTER_S = 86_400.0
_DELTA = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")  # RFC 9110 delta-seconds (+ a fraction)
_BY_STATUS: dict[int, type[UpstreamError]] = {
    503: UpstreamUnavailableError,
    408: UpstreamTimeoutError,
    504: UpstreamTimeoutError,
}


def class_for_status(status: int) -> type[UpstreamError]:
    return _BY_STATUS.get(status, UpstreamError)


def scrub(text: str, secret: str | None) -> str:
    """Replace a secret (the backend's API key) wherever an upstream echoed it."""
    if secret and secret in text:
        return text.replace(secret, "***")
    return text


def _delta(text: str) -> float | None:
    text = text.strip()
    return float(text) if _DELTA.fullmatch(text) else None  # at most 13 digits: finite


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait (0 to ``MAX_RETRY_AFTER_S``), from ``retry-after-ms`` or ``Retry-After``
    (delta-seconds or an HTTP date); None when absent or unreadable."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        got = _delta(ms)
        if got is not None:
            return min(got / 1000.0, MAX_RETRY_AFTER_S)
    value = headers.get("retry-after")
    if value is None:
        return None
    got = _delta(value)
    if got is not None:
        return min(got, MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value.strip())
        stamp = when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, stamp - (time.time() if now is None else now)), MAX_RETRY_AFTER_S)


def _error_message(body: bytes) -> tuple[str | None, bool]:
    """(message, is_openai_shaped) from an upstream error body."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, False
    if not isinstance(obj, dict):
        return None, False
    err = obj.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"], obj.get("type") != "error"  # Anthropic's shape has type "error"
    if isinstance(err, str):
        return err, False
    if obj.get("object") == "error" and isinstance(obj.get("message"), str):
        return obj["message"], False
    return None, False


def _snippet(body: bytes) -> str:
    text = body[: SNIPPET_CHARS * 2].decode("utf-8", "replace")
    text = " ".join(text.split())
    return text[:SNIPPET_CHARS]


def error_from_response(
    name: str, status: int, headers: Mapping[str, str], body: bytes, secret: str | None
) -> UpstreamError:
    message, openai_shaped = _error_message(body)
    if message is None:
        detail = _snippet(body)
        message = f"HTTP {status}" + (f": {detail}" if detail else "")
    message = scrub(f"backend {name!r} answered {status}: {message}", secret)
    relay = body if openai_shaped and not (secret and secret.encode() in body) else None
    return class_for_status(status)(
        message, upstream_status=status, body=relay, retry_after=parse_retry_after(headers)
    )


def connection_error(
    name: str, exc: BaseException, secret: str | None, when: str = ""
) -> UpstreamUnavailableError:
    where = f" {when}" if when else ""
    return UpstreamUnavailableError(
        f"backend {name!r} unreachable{where}",
        detail=scrub(f"{type(exc).__name__}: {exc}", secret),
    )


def timeout_error(
    name: str, exc: BaseException, when: str = "", *, connect: bool = False
) -> UpstreamTimeoutError:
    """A timeout: ``connect`` when no connection was made (safe to retry), else a read."""
    if connect:
        return UpstreamConnectTimeoutError(f"backend {name!r}: connecting timed out")
    where = f" {when}" if when else ""
    return UpstreamTimeoutError(f"backend {name!r} timed out{where}")


def malformed_event(name: str, event: bytes, secret: str | None) -> UpstreamError:
    """A stream event whose data is not a JSON object: the upstream is broken (logged with a
    snippet; the client is told only that the upstream's stream was malformed)."""
    log.warning(
        "backend %r sent a malformed stream event: %s",
        name,
        scrub(repr(event[:SNIPPET_CHARS]), secret),
    )
    return UpstreamError(f"backend {name!r} sent a malformed stream event (not a JSON object)")


def stream_error(name: str, payload: bytes, secret: str | None) -> UpstreamError:
    """An error event the upstream sent in the middle of a stream."""
    message, _ = _error_message(payload)
    return UpstreamError(
        scrub(f"backend {name!r} failed while streaming: {message or _snippet(payload)}", secret)
    )


async def post_checked(
    session: aiohttp.ClientSession,
    url: str,
    *,
    data: bytes,
    headers: Mapping[str, str] | None,
    timeout: aiohttp.ClientTimeout,
    name: str,
    secret: str | None,
) -> aiohttp.ClientResponse:
    """POST to an upstream; a response with status < 400, or the failure as an UpstreamError
    (connect vs read timeouts apart, the error body read and the connection given back)."""
    try:
        resp = await session.post(url, data=data, headers=headers, timeout=timeout)
    except aiohttp.ConnectionTimeoutError as exc:
        raise timeout_error(name, exc, connect=True) from exc
    except TimeoutError as exc:
        raise timeout_error(name, exc) from exc
    except aiohttp.ClientError as exc:
        raise connection_error(name, exc, secret) from exc
    if resp.status >= 400:
        try:
            body = await resp.read()
        except (TimeoutError, aiohttp.ClientError):
            body = b""
        finally:
            resp.release()
        raise error_from_response(name, resp.status, resp.headers, body, secret)
    return resp
