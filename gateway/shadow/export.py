"""Shadow records as request-log lines for ``gateway simulate`` (the cost-quality curve on the
deployment's own traffic). Only records with prompt text can be replayed; request headers
are not stored (they may carry credentials), so header-based rules replay as if absent."""

from __future__ import annotations

from typing import Any

from gateway.router.shadow_labels import qualities
from gateway.shadow.records import ShadowRecord, record_from_dict

__all__ = ["is_record", "to_log_line"]


def is_record(obj: dict[str, Any]) -> bool:
    return "prompt_sha256" in obj and "judge_mode" in obj and "local_backend" in obj


def to_log_line(record: ShadowRecord | dict[str, Any]) -> dict[str, Any] | None:
    """The simulator's wrapper line, labelled with the judged qualities; None without text."""
    r = record if isinstance(record, ShadowRecord) else record_from_dict(record)
    if not r.prompt:
        return None
    line: dict[str, Any] = {
        "request": {"model": r.virtual_model, "messages": r.prompt},
        "team": r.team,
        "timestamp": r.time,
    }
    if r.key_name:
        line["key_name"] = r.key_name
    if r.local_tokens:
        line["usage"] = _usage(r.local_tokens)
    if r.outcome is not None and r.reference_score is not None:
        weak, strong = qualities(r)
        line["label"] = {"weak_score": weak, "strong_score": strong}
    return line


def _usage(tokens: dict[str, int]) -> dict[str, Any]:
    """A record's token counts as the chat usage the request log reads (gateway.simulate.log)."""
    usage: dict[str, Any] = {
        k: tokens[k] for k in ("prompt_tokens", "completion_tokens") if k in tokens
    }
    if tokens.get("cached_tokens"):
        usage["prompt_tokens_details"] = {"cached_tokens": tokens["cached_tokens"]}
    if tokens.get("cache_write_tokens"):
        usage["cache_creation_input_tokens"] = tokens["cache_write_tokens"]
    return usage
