"""Request-body checks that must fail with a clear 400 before anything is routed.

Only what the gateway relies on is checked here; everything else passes through to the
upstream, which knows its own rules best.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import InvalidRequestError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc.args[0] if exc.args else exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    return body


def _number(body: dict, name: str, lo: float, hi: float) -> None:
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise InvalidRequestError(f"'{name}' must be a number between {lo} and {hi}", param=name)


def _positive_int(body: dict, name: str) -> None:
    v = body.get(name)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise InvalidRequestError(f"'{name}' must be a positive integer", param=name)


def validate(operation: str, body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("'model' is required and must be a string", param="model")
    if operation == "embeddings":
        inp = body.get("input")
        if inp is None or inp == "" or inp == []:
            raise InvalidRequestError("'input' is required", param="input")
        if not isinstance(inp, str | list):
            raise InvalidRequestError("'input' must be a string or an array", param="input")
        return
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be a boolean", param="stream")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise InvalidRequestError("'stream_options' must be an object", param="stream_options")
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _positive_int(body, "max_tokens")
    _positive_int(body, "max_completion_tokens")
    _positive_int(body, "n")
    if operation == "completions":
        prompt = body.get("prompt")
        if prompt is None or not isinstance(prompt, str | list):
            raise InvalidRequestError("'prompt' is required (a string, an array of strings or of token ids)", param="prompt")
        return
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty array", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidRequestError(f"messages[{i}] must be an object", param=f"messages[{i}]")
        if m.get("role") not in ROLES:
            raise InvalidRequestError(
                f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}", param=f"messages[{i}].role"
            )
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequestError(f"messages[{i}].content must be a string or an array", param=f"messages[{i}].content")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequestError("'tools' must be an array", param="tools")
    rf = body.get("response_format")
    if rf is not None and (not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema")):
        raise InvalidRequestError("'response_format.type' must be text, json_object or json_schema", param="response_format")
