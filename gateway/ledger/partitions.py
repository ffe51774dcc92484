"""Monthly partitions of ``gateway_ledger`` and the retention job that drops old ones.

A partition is created for a month the first time a row of that month is written (the writer
remembers which exist) and ``gateway ledger migrate`` creates the current month and the next
ones ahead of time. Dropping a whole month is the retention job: instant, and no bloat left
behind (``gateway ledger prune --keep-months N``).
"""

from __future__ import annotations

import re
import time

from gateway.ledger.db import Conn

__all__ = ["ensure_months", "month_of", "months_ahead", "partition_name", "prune"]

TABLE = "gateway_ledger"
_PART = re.compile(r"^gateway_ledger_(\d{4})_(\d{2})$")
# Serialises partition DDL between processes (CREATE ... IF NOT EXISTS alone can race).
PARTITION_LOCK_KEY = 0x6C65_6467_6572  # "ledger"


def month_of(ts: float) -> tuple[int, int]:
    t = time.gmtime(ts)
    return t.tm_year, t.tm_mon


def _next(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def months_ahead(ts: float, n: int) -> list[tuple[int, int]]:
    out = [month_of(ts)]
    for _ in range(n):
        out.append(_next(*out[-1]))
    return out


def partition_name(year: int, month: int) -> str:
    return f"{TABLE}_{year:04d}_{month:02d}"


async def ensure_months(conn: Conn, months: set[tuple[int, int]]) -> None:
    """Create the partitions of ``months`` that do not exist yet."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK_KEY)
        for year, month in sorted(months):
            ny, nm = _next(year, month)
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {partition_name(year, month)} PARTITION OF {TABLE} "
                f"FOR VALUES FROM ('{year:04d}-{month:02d}-01 00:00:00+00') "
                f"TO ('{ny:04d}-{nm:02d}-01 00:00:00+00')"
            )


async def existing_months(conn: Conn) -> set[tuple[int, int]]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1",
        TABLE,
    )
    out: set[tuple[int, int]] = set()
    for r in rows:
        m = _PART.match(r["relname"])
        if m:
            out.add((int(m.group(1)), int(m.group(2))))
    return out


async def prune(conn: Conn, keep_months: int, now: float | None = None) -> list[str]:
    """Drop the partitions older than the last ``keep_months`` months (the current one counts)."""
    if keep_months < 1:
        raise ValueError("keep_months must be at least 1")
    y, m = month_of(time.time() if now is None else now)
    for _ in range(keep_months - 1):
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)
    dropped: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK_KEY)
        for year, month in sorted(await existing_months(conn)):
            if (year, month) < (y, m):
                name = partition_name(year, month)
                await conn.execute(f"DROP TABLE {name}")
                dropped.append(name)
    return dropped
