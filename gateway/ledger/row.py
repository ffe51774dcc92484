"""One ledger row: what a finished request cost, saved and where it went.

A plain ``NamedTuple`` so the request path builds it in well under a microsecond and the
writer hands columns to PostgreSQL without another copy. Keys are named, never the key itself.
"""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

__all__ = ["COLUMNS", "LedgerRow", "from_json_list", "new_request_id", "to_json_list"]


class LedgerRow(NamedTuple):
    ts: float  # unix seconds when the request arrived
    request_id: str  # 32 hex digits (a UUID): keys the row, so a replay never double-counts
    team: str
    key_name: str | None
    virtual_model: str
    protocol: str  # chat, completions, embeddings, ... (the client's API)
    rule: str
    backend: str
    model: str
    self_hosted: bool  # no proprietary backend received this request (cache hits included)
    status: int
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens read from the provider's prompt cache
    cache_write_tokens: int  # prompt tokens written to it (priced apart, like reads)
    cost_usd: float
    savings_usd: float
    latency_ms: float
    overhead_ms: float
    cache: str  # hit, miss, bypass
    difficulty: float | None


COLUMNS: tuple[str, ...] = LedgerRow._fields

# PostgreSQL array types the columns are sent as, for INSERT ... SELECT FROM unnest($1::t[], ...):
# ts goes as epoch seconds and request_id as text, converted by the server (no per-row datetime
# or UUID objects built in the gateway).
PG_TYPES: tuple[str, ...] = (
    "float8",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "boolean",
    "smallint",
    "boolean",
    "integer",
    "integer",
    "integer",
    "integer",
    "double precision",
    "double precision",
    "real",
    "real",
    "text",
    "real",
)


def new_request_id() -> str:
    return uuid.uuid4().hex


def to_json_list(row: LedgerRow) -> list[Any]:
    return list(row)


# Spool lines written before cache_write_tokens existed (a gateway upgraded while rows waited on
# disk) lack that one field: it was 0 for them, as the migration's default says.
_CACHE_WRITE = COLUMNS.index("cache_write_tokens")
_BEFORE_CACHE_WRITE = len(COLUMNS) - 1


def from_json_list(values: list[Any]) -> LedgerRow:
    if len(values) == _BEFORE_CACHE_WRITE:
        values = [*values[:_CACHE_WRITE], 0, *values[_CACHE_WRITE:]]
    if len(values) != len(COLUMNS):
        raise ValueError(f"a ledger row has {len(COLUMNS)} fields, got {len(values)}")
    return LedgerRow(*values)


def columns_for_pg(rows: list[LedgerRow]) -> list[tuple[Any, ...]]:
    """Column-major values, one sequence per column (in PG_TYPES' types)."""
    return list(zip(*rows, strict=True))
