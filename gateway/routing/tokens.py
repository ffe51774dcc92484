"""Prompt token counts for routing and context-window checks.

Exact counts use the backend's tokenizer (``tokenizer: path/to/tokenizer.json`` in the
policy). Otherwise the documented estimate is: one token per 3.5 characters of text
(English averages ~4 characters per token with GPT/Llama/Qwen BPEs, so this errs on the
side of "does not fit"), plus 4 tokens per message for role and separators, plus 85 tokens
per image part (OpenAI's low-detail image cost), plus the JSON of any tools.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.protocols.request import Request

CHARS_PER_TOKEN = 3.5
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 85

__all__ = ["count_with_tokenizer", "estimate", "messages_text"]


def estimate(chars: int, overhead: int, images: int) -> int:
    """The documented estimate from what validation counted in its one walk over the body."""
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


def count_with_tokenizer(path: str, req: Request) -> int:
    """Exact text tokens by the backend's tokenizer, plus the same per-message/image overheads."""
    tok = _tokenizer(path)
    if req.operation == "chat":
        msgs = req.messages
        text = messages_text(req.body)
        return (
            len(tok.encode(text, add_special_tokens=False).ids)
            + TOKENS_PER_MESSAGE * len(msgs)
            + req.images * TOKENS_PER_IMAGE
        )
    data = req.body.get("prompt") if req.operation == "completions" else req.body.get("input")
    if isinstance(data, str):
        return len(tok.encode(data, add_special_tokens=False).ids)
    return req.prompt_tokens
