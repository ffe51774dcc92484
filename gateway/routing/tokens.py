"""Prompt token counts for routing and context-window checks.

Exact counts use the backend's tokenizer (``tokenizer: path/to/tokenizer.json`` in the
policy). Otherwise the documented estimate is: one token per 3.5 characters of text
(English averages ~4 characters per token with GPT/Llama/Qwen BPEs, so this errs on the
side of "does not fit"), plus 4 tokens per message for role and separators, plus 85 tokens
per image part (OpenAI's low-detail image cost), plus the JSON of any tools.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

CHARS_PER_TOKEN = 3.5
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 85

__all__ = ["estimate_prompt_tokens", "count_with_tokenizer", "messages_text"]


def _text_len(content: Any) -> tuple[int, int]:
    """(characters of text, number of images) in a message's content."""
    if isinstance(content, str):
        return len(content), 0
    chars = images = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                chars += len(part.get("text") or "")
            elif part.get("type") in ("image_url", "input_image", "image"):
                images += 1
    return chars, images


def estimate_prompt_tokens(operation: str, body: dict[str, Any]) -> int:
    chars = images = overhead = 0
    if operation == "chat":
        for m in body.get("messages") or ():
            if not isinstance(m, dict):
                continue
            c, i = _text_len(m.get("content"))
            chars += c
            images += i
            overhead += TOKENS_PER_MESSAGE
            for tc in m.get("tool_calls") or ():
                fn = tc.get("function") if isinstance(tc, dict) else None
                if isinstance(fn, dict):
                    chars += len(fn.get("name") or "") + len(fn.get("arguments") or "")
        tools = body.get("tools")
        if tools:
            chars += len(repr(tools))
    else:
        data = body.get("prompt") if operation == "completions" else body.get("input")
        if isinstance(data, str):
            chars = len(data)
        elif isinstance(data, list):
            for x in data:
                if isinstance(x, str):
                    chars += len(x)
                elif isinstance(x, int):  # token ids
                    overhead += 1
                elif isinstance(x, list):
                    overhead += len(x)
    return int(chars / CHARS_PER_TOKEN + 0.999) + overhead + images * TOKENS_PER_IMAGE


def messages_text(body: dict[str, Any]) -> str:
    parts: list[str] = []
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                p.get("text", "")
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
    return "\n".join(parts)


@lru_cache(maxsize=16)
def _tokenizer(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def count_with_tokenizer(path: str, operation: str, body: dict[str, Any]) -> int:
    """Exact text tokens by the backend's tokenizer, plus the same per-message/image overheads."""
    tok = _tokenizer(path)
    if operation == "chat":
        msgs = [m for m in body.get("messages") or () if isinstance(m, dict)]
        images = sum(_text_len(m.get("content"))[1] for m in msgs)
        text = messages_text(body)
        return (
            len(tok.encode(text, add_special_tokens=False).ids)
            + TOKENS_PER_MESSAGE * len(msgs)
            + images * TOKENS_PER_IMAGE
        )
    data = body.get("prompt") if operation == "completions" else body.get("input")
    if isinstance(data, str):
        return len(tok.encode(data, add_special_tokens=False).ids)
    return estimate_prompt_tokens(operation, body)
