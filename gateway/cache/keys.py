"""The cache key and the per-request cache decision.

The key hashes everything in the request body that can change the answer, plus the
operation and the caller's team (one team never sees another's cached answer). Rather than
listing the fields that matter, it drops the few known not to: the gateway passes unknown
fields through to OpenAI-compatible upstreams (``guided_json``, ``chat_template_kwargs``,
...), and any of them may change the answer, so an allow-list would serve wrong hits.
``stream`` and ``stream_options`` are dropped so a streamed request can be served from a
non-streamed answer and vice versa.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson

from gateway.config.schema import CacheConfig

__all__ = ["CacheMode", "cache_key", "cache_decision", "IGNORED_FIELDS"]

CacheMode = Literal["use", "store_only", "bypass"]

# Fields that never change the answer's content.
IGNORED_FIELDS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
    }
)
# Sampling numbers: 0 and 0.0 must give the same key.
_NUMERIC = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
)


def cache_key(operation: str, body: dict[str, Any], team: str, protocol: str = "openai") -> str:
    """Hex sha256 of (protocol, operation, team, the answer-changing part of ``body``),
    canonically encoded. The protocol is part of it: the stored answer is in the caller's."""
    kept = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    for name in _NUMERIC:
        v = kept.get(name)
        if type(v) is int:
            kept[name] = float(v)
    head = [operation, team] if protocol == "openai" else [protocol, operation, team]
    blob = orjson.dumps([*head, kept], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()


def _directives(header: str | None) -> set[str]:
    if not header:
        return set()
    return {d.strip().split("=", 1)[0].lower() for d in header.split(",")}


def _deterministic(body: dict[str, Any], operation: str) -> bool:
    if operation == "embeddings":
        return True
    seed = body.get("seed")
    if seed is not None and not isinstance(seed, bool):
        return True
    # An absent temperature means OpenAI's default of 1.0: not deterministic.
    t = body.get("temperature")
    return isinstance(t, int | float) and not isinstance(t, bool) and t == 0


def cache_decision(
    body: dict[str, Any], cache_control_header: str | None, cfg: CacheConfig, operation: str
) -> CacheMode:
    """``use`` (look up, store a miss), ``store_only`` (skip the lookup, refresh the entry) or ``bypass``.

    ``Cache-Control: no-store`` bypasses; ``no-cache`` refreshes. Requests for several
    choices (``n`` > 1) are never cached; with ``deterministic_only`` only temperature-0 or
    seeded requests (and all embeddings) are.
    """
    if not cfg.enabled:
        return "bypass"
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        return "bypass"
    directives = _directives(cache_control_header)
    if "no-store" in directives:
        return "bypass"
    if cfg.deterministic_only and not _deterministic(body, operation):
        return "bypass"
    if "no-cache" in directives:
        return "store_only"
    return "use"
