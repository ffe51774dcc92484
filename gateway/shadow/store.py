"""Where shadow records go: PostgreSQL (a ``shadow_records`` table of its own) or a JSONL file,
and how they are read back (``gateway router train --from-shadow SOURCE``, ``evaluate``).

A SOURCE is a ``postgresql://`` DSN or a path to a JSONL file. Retention: records older than
``retention_days`` are deleted at start and then once an hour (PostgreSQL) or when the file is
compacted (JSONL: rewritten without old lines at start and once a day). Without a store of its
own, shadow records go to the ledger's database (``ledger.database_url``) when there is one.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import orjson

from gateway.config.shadow import ShadowStoreConfig
from gateway.jsonl import iter_json_objects, read_lines
from gateway.shadow.errors import ShadowSourceError, ShadowStoreError
from gateway.shadow.records import ShadowRecord, record_from_dict

__all__ = [
    "JsonlStore",
    "PostgresStore",
    "RecordStore",
    "build_store",
    "is_postgres",
    "read_records",
]

DAY_S = 86400.0
PRUNE_EVERY_S = 3600.0
TABLE = "shadow_records"
MIGRATIONS = "gateway.shadow.migrations"


def is_postgres(source: str) -> bool:
    return source.startswith(("postgres://", "postgresql://"))


class RecordStore(ABC):
    @abstractmethod
    async def open(self) -> None:
        """Create what is missing (table, file's folder) and apply retention once."""

    @abstractmethod
    async def write(self, record: ShadowRecord) -> None:
        """Persist one record; ``ShadowStoreError`` when the store cannot take it."""

    @abstractmethod
    async def close(self) -> None: ...


class JsonlStore(RecordStore):
    """Append-only JSON Lines; one ``write`` is one ``write(2)`` of one line (O_APPEND)."""

    def __init__(self, path: str | Path, retention_days: int, clock=time.time) -> None:
        self.path = Path(path)
        self.retention_s = retention_days * DAY_S
        self._clock = clock
        self._lock = asyncio.Lock()
        self._pruned_at = 0.0

    async def open(self) -> None:
        await asyncio.to_thread(self._prune)

    def _prune(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                self.path.touch()
                return
            cutoff = self._clock() - self.retention_s
            lines = self.path.read_bytes().splitlines()
            kept = [ln for ln in lines if ln.strip() and _line_time(ln) >= cutoff]
            if len(kept) != len(lines):
                tmp = self.path.with_suffix(self.path.suffix + ".tmp")
                tmp.write_bytes(b"".join(ln + b"\n" for ln in kept))
                tmp.replace(self.path)
        except OSError as exc:
            raise ShadowStoreError(f"shadow store {self.path}: {exc.strerror}") from exc
        self._pruned_at = self._clock()

    def _append(self, line: bytes) -> None:
        try:
            with self.path.open("ab") as f:
                f.write(line + b"\n")
        except OSError as exc:
            raise ShadowStoreError(f"shadow store {self.path}: {exc.strerror}") from exc

    async def write(self, record: ShadowRecord) -> None:
        async with self._lock:
            if self._clock() - self._pruned_at > DAY_S:
                await asyncio.to_thread(self._prune)
            await asyncio.to_thread(self._append, record.to_json())

    async def close(self) -> None:
        return None


def _line_time(line: bytes) -> float:
    try:
        return float(orjson.loads(line).get("time", 0.0))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return float("inf")  # not ours to judge: keep it


class PostgresStore(RecordStore):
    """The ``shadow_records`` table, created by this package's migrations through the shared
    database plumbing (gateway.ledger.db: pool, numbered migrations, advisory lock)."""

    def __init__(self, dsn: str, retention_days: int, clock=time.time) -> None:
        self.dsn = dsn  # may hold a password: never logged or put in an error
        self.retention_days = retention_days
        self._clock = clock
        self._pool: Any = None  # asyncpg.Pool once open
        self._pruned_at = 0.0

    async def open(self) -> None:
        from gateway.ledger.db import DB_ERRORS, migrate, open_pool

        try:
            self._pool = await open_pool(self.dsn, max_size=2)
            async with self._pool.acquire() as con:
                await migrate(con, "shadow", MIGRATIONS)
            await self._prune()
        except DB_ERRORS as exc:
            raise ShadowStoreError(
                f"shadow store (PostgreSQL): {type(exc).__name__}: {exc}"
            ) from exc

    async def _prune(self) -> None:
        await self._pool.execute(
            f"DELETE FROM {TABLE} WHERE at < now() - make_interval(days => $1)",
            self.retention_days,
        )
        self._pruned_at = self._clock()

    async def write(self, record: ShadowRecord) -> None:
        from gateway.ledger.db import DB_ERRORS

        if self._pool is None:
            raise ShadowStoreError("shadow store (PostgreSQL) is not open")
        try:
            if self._clock() - self._pruned_at > PRUNE_EVERY_S:
                await self._prune()
            await self._pool.execute(
                f"INSERT INTO {TABLE} (id, at, team, key_name, virtual_model, rule, difficulty,"
                " confidence, local_backend, reference_backend, judge_mode, local_score,"
                " reference_score, outcome, shadow_cost_usd, record) VALUES ($1, to_timestamp($2),"
                " $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16::jsonb)"
                " ON CONFLICT (id) DO NOTHING",
                record.id,
                record.time,
                record.team,
                record.key_name,
                record.virtual_model,
                record.rule,
                record.difficulty,
                record.confidence,
                record.local_backend,
                record.reference_backend,
                record.judge_mode,
                record.local_score,
                record.reference_score,
                record.outcome,
                record.shadow_cost_usd,
                record.to_json().decode(),
            )
        except DB_ERRORS as exc:
            raise ShadowStoreError(
                f"shadow store (PostgreSQL): {type(exc).__name__}: {exc}"
            ) from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def build_store(cfg: ShadowStoreConfig, ledger_url: str | None = None) -> RecordStore | None:
    """``postgres_dsn``, else ``jsonl``, else the ledger's database when one is configured."""
    if cfg.postgres_dsn:
        return PostgresStore(cfg.postgres_dsn, cfg.retention_days)
    if cfg.jsonl:
        return JsonlStore(cfg.jsonl, cfg.retention_days)
    if ledger_url:
        return PostgresStore(ledger_url, cfg.retention_days)
    return None


# ---------------------------------------------------------------- reading back


def read_records(source: str) -> list[ShadowRecord]:
    """Every record of a source (a ``postgresql://`` DSN or a JSONL path), oldest first."""
    if is_postgres(source):
        return asyncio.run(_read_postgres(source))
    out = []
    lines = read_lines(source, ShadowSourceError, "shadow records")
    for no, obj in iter_json_objects(lines, source, ShadowSourceError):
        try:
            out.append(record_from_dict(obj))
        except TypeError as exc:
            raise ShadowSourceError(f"{source}:{no}: not a shadow record ({exc})") from None
    out.sort(key=lambda r: r.time)
    return out


async def _read_postgres(dsn: str) -> list[ShadowRecord]:
    import asyncpg

    from gateway.ledger.db import DB_ERRORS

    try:
        con = await asyncpg.connect(dsn, timeout=5)
    except DB_ERRORS as exc:
        raise ShadowSourceError(
            f"cannot connect to the shadow database: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        rows = await con.fetch(f"SELECT record FROM {TABLE} ORDER BY at, id")
    except asyncpg.UndefinedTableError as exc:
        raise ShadowSourceError(f"the database has no {TABLE} table (no shadow records)") from exc
    finally:
        await con.close()
    return [record_from_dict(orjson.loads(r["record"])) for r in rows]
