"""Engine logprobs -> OpenAI's two shapes (chat ``content`` entries, legacy completions arrays)."""

from __future__ import annotations

from typing import Any

from local_engine.tokenizer import Tokenizer

__all__ = ["chat_logprobs", "completion_logprobs", "merge_completion_logprobs"]


def _token(tokenizer: Tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def _chat_entry(tokenizer: Tokenizer, token_id: int, logprob: float) -> dict:
    text = _token(tokenizer, token_id)
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def chat_logprobs(tokenizer: Tokenizer, entries: list[dict[str, Any]]) -> list[dict]:
    """OpenAI chat ``logprobs.content``: one entry per token with its ``top_logprobs``."""
    return [
        {
            **_chat_entry(tokenizer, e["token_id"], e["logprob"]),
            "top_logprobs": [
                _chat_entry(tokenizer, t, lp) for t, lp in e.get("top_logprobs") or ()
            ],
        }
        for e in entries
    ]


def completion_logprobs(
    tokenizer: Tokenizer, entries: list[dict[str, Any]], text_offset: int
) -> dict:
    """Legacy completions ``logprobs``: parallel arrays; ``text_offset`` is where this piece starts."""
    tokens, offsets, top = [], [], []
    for e in entries:
        token = _token(tokenizer, e["token_id"])
        tokens.append(token)
        offsets.append(text_offset)
        text_offset += len(token)
        top.append({_token(tokenizer, t): lp for t, lp in e.get("top_logprobs") or ()})
    return {
        "tokens": tokens,
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": top,
        "text_offset": offsets,
    }


def merge_completion_logprobs(parts: list[dict]) -> dict | None:
    if not parts:
        return None
    return {key: [v for p in parts for v in p[key]] for key in parts[0]}
