"""litellm's objects -> OpenAI wire format, and litellm's exceptions -> our UpstreamError family.

litellm answers in OpenAI's shape plus extras (``provider_specific_fields``, ``function_call``,
per-call ``index`` on message tool calls, cost fields in usage). Clients of the gateway get
exactly OpenAI's fields; tool calls keep their ids, names and arguments verbatim.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.backends.base import Usage
from gateway.backends.upstream_errors import (
    class_for_status,
    parse_retry_after,
    scrub,
    timeout_error,
)
from gateway.errors import UpstreamError, UpstreamUnavailableError
from gateway.sse import data_event

__all__ = [
    "chat_body",
    "chunk_event",
    "completion_body",
    "embedding_body",
    "map_exception",
    "usage_dict",
    "usage_of",
]

# "litellm.RateLimitError: AnthropicException - {...}. Handle with `litellm.X`."
_PREFIX = re.compile(r"^litellm\.\w+:\s*(?:\w+(?:Exception|Error)\s*-\s*)?")
_SUFFIX = re.compile(r"\.?\s*Handle with `litellm\.\w+`\.?\s*$")
_JSON_IN_TEXT = re.compile(r"\{.*\}", re.S)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def usage_of(obj: Any) -> Usage | None:
    u = _get(obj, "usage")
    if u is None:
        return None
    details = _get(u, "prompt_tokens_details")
    cached = (_get(details, "cached_tokens") or 0) if details is not None else 0
    written = _get(u, "cache_creation_input_tokens")  # Anthropic's, inside prompt_tokens
    return Usage(
        int(_get(u, "prompt_tokens") or 0),
        int(_get(u, "completion_tokens") or 0),
        int(cached),
        written if isinstance(written, int) and not isinstance(written, bool) else 0,
    )


def usage_dict(u: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }
    if u.cached_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": u.cached_tokens}
    return out


def _tool_call(tc: Any, streaming: bool) -> dict[str, Any]:
    fn = _get(tc, "function")
    out: dict[str, Any] = {}
    if streaming:
        out["index"] = _get(tc, "index") or 0
    tc_id = _get(tc, "id")
    if tc_id is not None:
        out["id"] = tc_id
        out["type"] = _get(tc, "type") or "function"
    elif not streaming:
        out["type"] = "function"
    f: dict[str, Any] = {}
    name = _get(fn, "name")
    if name is not None:
        f["name"] = name
    args = _get(fn, "arguments")
    if args is not None or not streaming:
        f["arguments"] = args or ""
    out["function"] = f
    return out


def chat_body(resp: Any, fallback_model: str) -> dict[str, Any]:
    """A litellm ModelResponse as an OpenAI ``chat.completion`` object."""
    choices = []
    for ch in _get(resp, "choices") or []:
        msg = _get(ch, "message")
        message: dict[str, Any] = {
            "role": _get(msg, "role") or "assistant",
            "content": _get(msg, "content"),
        }
        calls = _get(msg, "tool_calls")
        if calls:
            message["tool_calls"] = [_tool_call(tc, streaming=False) for tc in calls]
        choices.append(
            {
                "index": _get(ch, "index") or 0,
                "message": message,
                "finish_reason": _get(ch, "finish_reason"),
                "logprobs": None,
            }
        )
    out = _envelope(resp, "chat.completion", fallback_model, choices)
    if _get(resp, "system_fingerprint"):
        out["system_fingerprint"] = _get(resp, "system_fingerprint")
    return out


def _envelope(
    resp: Any, obj: str, fallback_model: str, choices: list[dict[str, Any]]
) -> dict[str, Any]:
    """The fields every OpenAI completion object shares, usage included when litellm has it."""
    out: dict[str, Any] = {
        "id": _get(resp, "id"),
        "object": obj,
        "created": _get(resp, "created"),
        "model": _get(resp, "model") or fallback_model,
        "choices": choices,
    }
    u = usage_of(resp)
    if u is not None:
        out["usage"] = usage_dict(u)
    return out


def completion_body(resp: Any, fallback_model: str) -> dict[str, Any]:
    """A litellm TextCompletionResponse as an OpenAI ``text_completion`` object."""
    choices = [
        {
            "index": _get(ch, "index") or 0,
            "text": _get(ch, "text") or "",
            "finish_reason": _get(ch, "finish_reason"),
            "logprobs": None,
        }
        for ch in _get(resp, "choices") or []
    ]
    return _envelope(resp, "text_completion", fallback_model, choices)


def embedding_body(resp: Any, fallback_model: str) -> dict[str, Any]:
    data = [
        {"object": "embedding", "index": _get(d, "index") or i, "embedding": _get(d, "embedding")}
        for i, d in enumerate(_get(resp, "data") or [])
    ]
    u = usage_of(resp) or Usage()
    return {
        "object": "list",
        "data": data,
        "model": _get(resp, "model") or fallback_model,
        "usage": {"prompt_tokens": u.prompt_tokens, "total_tokens": u.prompt_tokens},
    }


def chunk_event(chunk: Any, fallback_model: str) -> bytes | None:
    """One litellm stream chunk as an OpenAI SSE event; None when it carries nothing."""
    choices = []
    for ch in _get(chunk, "choices") or []:
        d = _get(ch, "delta")
        delta: dict[str, Any] = {}
        role = _get(d, "role")
        if role:
            delta["role"] = role
        content = _get(d, "content")
        calls = _get(d, "tool_calls")
        if content is not None and (content or role or not calls):
            delta["content"] = content
        if calls:
            delta["tool_calls"] = [_tool_call(tc, streaming=True) for tc in calls]
        finish = _get(ch, "finish_reason")
        if not delta and finish is None:
            continue
        choices.append(
            {
                "index": _get(ch, "index") or 0,
                "delta": delta,
                "finish_reason": finish,
                "logprobs": None,
            }
        )
    if not choices:
        return None
    out = {
        "id": _get(chunk, "id"),
        "object": "chat.completion.chunk",
        "created": _get(chunk, "created"),
        "model": _get(chunk, "model") or fallback_model,
        "choices": choices,
    }
    return data_event(out)


def _clean_message(text: str) -> str:
    text = _SUFFIX.sub("", _PREFIX.sub("", text.strip()))
    m = _JSON_IN_TEXT.search(text)
    if m:
        raw = m.group(0)
        if raw.startswith("b'") or raw.startswith('b"'):
            raw = raw[2:-1]
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return text
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
    return text


def _no_answer(exc: BaseException) -> bool:
    """Whether the chain of causes says the upstream never answered (refused, reset, DNS)."""
    import httpx

    seen = 0
    x: BaseException | None = exc
    while x is not None and seen < 10:
        if isinstance(x, (httpx.TransportError, ConnectionError)):
            return True
        if type(x).__module__.startswith("aiohttp") and type(x).__name__ in (
            "ClientConnectorError",
            "ServerDisconnectedError",
            "ClientOSError",
        ):
            return True
        x = x.__cause__ or x.__context__
        seen += 1
    return False


def map_exception(name: str, exc: BaseException, secret: str | None) -> UpstreamError:
    """A litellm (openai-derived) exception as an UpstreamError, message cleaned and scrubbed."""
    import openai

    detail = scrub(_clean_message(str(exc)), secret)
    if isinstance(exc, openai.APITimeoutError):
        import httpx

        connect = isinstance(exc.__cause__, httpx.ConnectTimeout)  # the SDK raises from it
        return timeout_error(name, exc, connect=connect)
    if isinstance(exc, openai.APIConnectionError) or _no_answer(exc):
        return UpstreamUnavailableError(f"backend {name!r} unreachable", detail=detail)
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        return UpstreamError(f"backend {name!r} failed", detail=detail)
    headers = getattr(exc, "litellm_response_headers", None) or {}
    body = None
    if 400 <= status < 500:
        err_type = "invalid_request_error" if status in (400, 413, 422) else "upstream_error"
        body = orjson.dumps(
            {"error": {"message": detail, "type": err_type, "param": None, "code": None}}
        )
    return class_for_status(status)(
        f"backend {name!r} answered {status}: {detail}",
        upstream_status=status,
        body=body,
        retry_after=parse_retry_after(headers),
    )
