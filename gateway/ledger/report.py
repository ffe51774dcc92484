"""Usage reports from the ledger: requests, tokens (prompt, completion, and the prompt tokens read
from / written to providers' prompt caches), cost, savings and the self-hosted share,
grouped by team, key, backend, model, rule or day over a time range.

``gateway usage`` and ``GET /admin/usage`` both call ``usage()``; their JSON is the same list of
objects. The query filters on ``ts`` first (partition pruning + the ts / (team, ts) / (key, ts)
indexes), then groups.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from gateway.ledger.db import Conn
from gateway.ledger.partitions import TABLE

__all__ = ["GROUPS", "UsageQuery", "format_rows", "parse_day", "usage"]

# report field -> SQL expression
GROUPS: dict[str, str] = {
    "team": "team",
    "key": "coalesce(key_name, '')",
    "backend": "backend",
    "model": "virtual_model",
    "rule": "rule",
    "day": "to_char(date_trunc('day', ts AT TIME ZONE 'UTC'), 'YYYY-MM-DD')",
}
FORMATS = ("table", "json", "csv")
METRICS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "cost_usd",
    "savings_usd",
    "self_hosted_share",
)


def parse_day(text: str) -> datetime:
    """``YYYY-MM-DD`` or an ISO timestamp (UTC unless it says otherwise) -> aware datetime."""
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not a date: {text!r} (expected YYYY-MM-DD or an ISO timestamp)"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class UsageQuery:
    since: datetime
    until: datetime | None = None  # exclusive; None: now
    by: tuple[str, ...] = ("team",)
    team: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        for b in self.by:
            if b not in GROUPS:
                raise ValueError(f"cannot group by {b!r}; choose from {', '.join(GROUPS)}")
        if self.until is not None and self.until <= self.since:
            raise ValueError("--until must be after --since")

    def sql(self) -> tuple[str, list[Any]]:
        args: list[Any] = [self.since, self.until or datetime.now(UTC) + timedelta(seconds=1)]
        where = ["ts >= $1", "ts < $2"]
        if self.team is not None:
            args.append(self.team)
            where.append(f"team = ${len(args)}")
        if self.key is not None:
            args.append(self.key)
            where.append(f"key_name = ${len(args)}")
        groups = [f"{GROUPS[b]} AS {b}" for b in self.by]
        select = ", ".join(
            [
                *groups,
                "count(*) AS requests",
                "coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens",
                "coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens",
                "coalesce(sum(cached_tokens), 0)::bigint AS cached_tokens",
                "coalesce(sum(cache_write_tokens), 0)::bigint AS cache_write_tokens",
                "coalesce(sum(cost_usd), 0) AS cost_usd",
                "coalesce(sum(savings_usd), 0) AS savings_usd",
                "avg(self_hosted::int)::float8 AS self_hosted_share",
            ]
        )
        order = ", ".join(str(i + 1) for i in range(len(self.by)))
        group = f" GROUP BY {order} ORDER BY {order}" if self.by else ""
        return f"SELECT {select} FROM {TABLE} WHERE {' AND '.join(where)}{group}", args


async def usage(conn: Conn | asyncpg.Pool, q: UsageQuery) -> list[dict[str, Any]]:
    sql, args = q.sql()
    rows = await conn.fetch(sql, *args)
    out = []
    for r in rows:
        d = dict(r)
        if d["requests"] == 0:  # no grouping and no rows: an empty report, not one zero row
            continue
        d["cost_usd"] = round(d["cost_usd"], 10)
        d["savings_usd"] = round(d["savings_usd"], 10)
        d["self_hosted_share"] = round(d["self_hosted_share"], 6)
        out.append(d)
    return out


def format_rows(rows: list[dict[str, Any]], by: tuple[str, ...], fmt: str) -> str:
    import orjson

    if fmt == "json":
        return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n"
    fields = [*by, *METRICS]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(r)
        return buf.getvalue()
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    cells = [
        [
            *(str(r[b]) for b in by),
            f"{r['requests']:,}",
            f"{r['prompt_tokens']:,}",
            f"{r['completion_tokens']:,}",
            f"{r['cached_tokens']:,}",
            f"{r['cache_write_tokens']:,}",
            f"${r['cost_usd']:.4f}",
            f"${r['savings_usd']:.4f}",
            f"{100 * r['self_hosted_share']:.1f}%",
        ]
        for r in rows
    ]
    head = [
        *by,
        "requests",
        "prompt",
        "completion",
        "cache read",
        "cache write",
        "cost",
        "saved",
        "self-hosted",
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = [
        "  ".join(
            h.ljust(w) if i < len(by) else h.rjust(w)
            for i, (h, w) in enumerate(zip(head, widths, strict=True))
        )
    ]
    for c in cells:
        lines.append(
            "  ".join(
                x.ljust(w) if i < len(by) else x.rjust(w)
                for i, (x, w) in enumerate(zip(c, widths, strict=True))
            )
        )
    if not cells:
        lines.append("(no requests in this range)")
    return "\n".join(lines) + "\n"
