"""Request-body checks that must fail with a clear 400 before anything is routed.

Only what the gateway relies on is checked here; everything else passes through to the
upstream, which knows its own rules best.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import InvalidRequestError
from gateway.protocols.request import Operation, Request
from gateway.routing.tokens import TOKENS_PER_MESSAGE, estimate

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# orjson reads JSON nested up to 1024 levels but writes only up to 254: a deeper body would
# parse here and then fail where the gateway re-encodes it (model swap, cache key).
MAX_ENCODABLE_DEPTH = 254


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"request body is not valid JSON: {exc.args[0] if exc.args else exc}"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    if (
        raw.count(b"[") + raw.count(b"{") > MAX_ENCODABLE_DEPTH
    ):  # cheap pre-check; deep bodies are rare
        try:
            orjson.dumps(body)
        except orjson.JSONEncodeError:
            raise InvalidRequestError(
                f"request body is nested more than {MAX_ENCODABLE_DEPTH} levels deep"
            ) from None
    return body


def _number(body: dict, name: str, lo: float, hi: float) -> None:
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise InvalidRequestError(f"'{name}' must be a number between {lo} and {hi}", param=name)


MAX_INT_FIELD = 2**31 - 1  # no model generates more; larger values are mistakes, not requests


def _positive_int(body: dict, name: str) -> None:
    v = body.get(name)
    if v is not None and (
        isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_INT_FIELD
    ):
        raise InvalidRequestError(
            f"'{name}' must be an integer between 1 and {MAX_INT_FIELD}", param=name
        )


_IMAGE_PARTS = ("image_url", "input_image", "image")


def _content_parts(parts: list, i: int) -> tuple[int, int]:
    """Routing reads part types, text and images: those must have their documented types.
    Returns (characters of text, number of images)."""
    chars = images = 0
    for j, part in enumerate(parts):
        where = f"messages[{i}].content[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequestError(
                f"{where} must be an object with a string 'type'", param=where
            )
        kind = part["type"]
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequestError(f"{where}.text must be a string", param=f"{where}.text")
            chars += len(text)
        elif kind in _IMAGE_PARTS:
            images += 1
    return chars, images


def _tool_calls(calls: Any, i: int) -> int:
    """Checks a message's tool calls; returns the characters of their names and arguments."""
    where = f"messages[{i}].tool_calls"
    if not isinstance(calls, list):
        raise InvalidRequestError(f"{where} must be an array", param=where)
    chars = 0
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise InvalidRequestError(
                f"{where}[{j}] must be an object with a 'function' object", param=f"{where}[{j}]"
            )
        for name in ("name", "arguments"):
            v = fn.get(name)
            if v is None:
                continue
            if not isinstance(v, str):
                raise InvalidRequestError(
                    f"{where}[{j}].function.{name} must be a string",
                    param=f"{where}[{j}].function.{name}",
                )
            chars += len(v)
    return chars


def _prompt_size(data: Any) -> tuple[int, int]:
    """(characters, extra tokens) of a completions prompt or an embeddings input."""
    if isinstance(data, str):
        return len(data), 0
    chars = extra = 0
    for x in data:
        if isinstance(x, str):
            chars += len(x)
        elif isinstance(x, int):  # token ids
            extra += 1
        elif isinstance(x, list):
            extra += len(x)
    return chars, extra


def _common(req: Request, body: dict[str, Any]) -> Request:
    max_out = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    req.max_output_tokens = max_out if isinstance(max_out, int) else 0
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        req.metadata = metadata
    n = body.get("n")
    req.n = n if isinstance(n, int) else None
    req.seed = body.get("seed")
    req.temperature = body.get("temperature")
    return req


def validate(operation: Operation, body: dict[str, Any], raw: bytes | None = None) -> Request:
    """Check an OpenAI-format body and describe it, in one walk; raises InvalidRequestError."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("'model' is required and must be a string", param="model")
    if operation == "embeddings":
        inp = body.get("input")
        if inp is None or inp == "" or inp == []:
            raise InvalidRequestError("'input' is required", param="input")
        if not isinstance(inp, str | list):
            raise InvalidRequestError("'input' must be a string or an array", param="input")
        chars, extra = _prompt_size(inp)
        req = Request(operation, model, body, raw, prompt_tokens=estimate(chars, extra, 0))
        return _common(req, body)
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
    req = Request(operation, model, body, raw, stream=bool(stream))
    req.include_usage = bool(so and so.get("include_usage"))
    if operation == "completions":
        prompt = body.get("prompt")
        if prompt is None or not isinstance(prompt, str | list):
            raise InvalidRequestError(
                "'prompt' is required (a string, an array of strings or of token ids)",
                param="prompt",
            )
        chars, extra = _prompt_size(prompt)
        req.prompt_tokens = estimate(chars, extra, 0)
        return _common(req, body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty array", param="messages")
    chars = images = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidRequestError(f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = m.get("role")
        if not isinstance(role, str) or role not in ROLES:  # a list or object role is unhashable
            raise InvalidRequestError(
                f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}",
                param=f"messages[{i}].role",
            )
        content = m.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            c, n_img = _content_parts(content, i)
            chars += c
            images += n_img
        elif content is not None:
            raise InvalidRequestError(
                f"messages[{i}].content must be a string or an array",
                param=f"messages[{i}].content",
            )
        if m.get("tool_calls") is not None:
            chars += _tool_calls(m["tool_calls"], i)
    needs: set[str] = set()
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequestError("'tools' must be an array", param="tools")
    if tools:
        chars += len(repr(tools))
        needs.add("tools")
    elif body.get("functions"):
        needs.add("tools")
    rf = body.get("response_format")
    if rf is not None:
        kind = rf.get("type") if isinstance(rf, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            raise InvalidRequestError(
                "'response_format.type' must be text, json_object or json_schema",
                param="response_format",
            )
        if kind != "text":
            needs.add(kind)
    if images:
        needs.add("vision")
    req.needs = frozenset(needs)
    req.images = images
    req.prompt_tokens = estimate(chars, TOKENS_PER_MESSAGE * len(messages), images)
    return _common(req, body)
