"""The ledger writer: rows in on the request path for the cost of a list append, out to
PostgreSQL in batches by a background task.

    record(row) -> in-memory buffer (bounded) --flush task--> INSERT ... SELECT FROM unnest(...)
                                  |                                  | fails / times out
                                  +-- buffer full -----> spool file <+  (fsync, in order)
                                                             | database back (or restart)
                                                             +--> replayed oldest first, then new rows

A slow or dead database never slows a request: the request path only appends; the flush task
spools what it cannot write and retries with backoff. Rows are keyed by (request_id, ts) with
``ON CONFLICT DO NOTHING``, so a batch that reached the database before its connection broke
is not counted twice when it is replayed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import asyncpg

from gateway.ledger import partitions
from gateway.ledger.db import DB_ERRORS, Conn, open_pool
from gateway.ledger.metrics import LedgerMetrics
from gateway.ledger.row import COLUMNS, PG_TYPES, LedgerRow, columns_for_pg
from gateway.ledger.schema import ensure_schema
from gateway.ledger.spool import Spool

__all__ = ["LedgerWriter"]

log = logging.getLogger("gateway.ledger")

INSERT_SQL = (
    f"INSERT INTO {partitions.TABLE} ({', '.join(COLUMNS)}) "
    f"SELECT to_timestamp(ts), request_id::uuid, {', '.join(COLUMNS[2:])} FROM unnest("
    + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(PG_TYPES))
    + f") AS r({', '.join(COLUMNS)}) ON CONFLICT DO NOTHING"
)
ORPHAN_SCAN_S = 60.0  # how often to look for spool files left by processes that are gone
BACKOFF_MIN_S = 0.25
BACKOFF_MAX_S = 5.0


class LedgerWriter:
    def __init__(
        self,
        database_url: str,
        spool_dir: str | Path,
        *,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        max_buffer_rows: int = 10_000,
        write_timeout_s: float = 5.0,
        metrics: LedgerMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = database_url
        self.spool = Spool(spool_dir)
        self._batch = batch_size
        self._interval = flush_interval_s
        self._max = max_buffer_rows
        self._timeout = write_timeout_s
        self.metrics = metrics
        self._clock = clock
        self._buf: list[LedgerRow] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pool: asyncpg.Pool | None = None
        self._months: set[tuple[int, int]] = set()
        self._schema_ok = False  # migrations checked on this database
        self._retry_at = 0.0  # monotonic; while in the future the database counts as down
        self._backoff = BACKOFF_MIN_S
        self._scan_at = 0.0  # monotonic; next look for orphaned spool files
        self._closing = False
        self.up = False

    # ------------------------------------------------------------ request path

    def record(self, row: LedgerRow) -> None:
        """Queue one row. O(1); never blocks on the database."""
        buf = self._buf
        buf.append(row)
        n = len(buf)
        if n >= self._batch:
            self._wake.set()
            if n >= self._max:  # the database is behind: keep memory bounded, keep the rows
                self._spool_buffer(sync=False)

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")

    async def close(self, timeout_s: float = 5.0) -> None:
        """Write what is buffered (or spool it if the database does not take it in time)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except TimeoutError:
                log.warning("ledger: database too slow at shutdown; rows stay in the spool")
            self._task = None
        self._spool_buffer(sync=True)
        self.spool.close()
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    async def pool(self) -> asyncpg.Pool:
        """The writer's pool (opened now if needed), for readers such as GET /admin/usage."""
        if self._pool is None:
            self._pool = await open_pool(self._url, command_timeout_s=self._timeout)
        return self._pool

    # ------------------------------------------------------------ flush task

    async def _run(self) -> None:
        while True:
            if not self._closing:
                try:
                    await asyncio.wait_for(self._wake.wait(), self._interval)
                except TimeoutError:
                    pass
            self._wake.clear()
            await self._flush()
            self._report()
            if self._closing:
                return

    async def _flush(self) -> None:
        if time.monotonic() < self._retry_at:  # known down: keep rows on disk, not in memory
            self._spool_buffer(sync=True)
            return
        if not self._buf and not self.spool.rows and time.monotonic() < self._scan_at:
            return
        try:
            pool = await self.pool()
            async with pool.acquire(timeout=self._timeout) as conn:
                if not self._schema_ok:  # an upgraded gateway upgrades its table before writing
                    applied = await ensure_schema(conn)
                    if applied:
                        log.warning("ledger: schema upgraded (%s)", ", ".join(applied))
                    self._schema_ok = True
                await self._replay(conn)
                while self._buf:
                    batch = self._buf[: self._batch]
                    del self._buf[: self._batch]
                    try:
                        await self._insert(conn, batch)
                    except BaseException:
                        self._to_spool(batch, sync=True)  # the batch stays ahead of the rest
                        raise
                    if self.metrics:
                        self.metrics.written.inc(len(batch))
        except DB_ERRORS as exc:
            self._failed(exc)
            self._spool_buffer(sync=True)
            return
        if not self.up:
            log.warning("ledger: database reachable; writing")
        self.up = True
        self._backoff = BACKOFF_MIN_S

    async def _replay(self, conn: Conn) -> None:
        now = time.monotonic()
        if now >= self._scan_at:
            self._scan_at = now + ORPHAN_SCAN_S
            for path, fh in self.spool.adopt_orphans():
                n = await self._replay_file(conn, path, fh)
                Spool.release(path, fh, replayed=True)
                log.warning("ledger: replayed %d rows spooled by an earlier process (%s)", n, path)
        fh_own = self.spool.own_reader()
        if fh_own is not None:
            with fh_own:
                n = await self._replay_file(conn, self.spool.path, fh_own)
            self.spool.clear_own()  # no await since the last read: nothing was appended unseen
            log.warning("ledger: replayed %d spooled rows", n)

    async def _replay_file(self, conn: Conn, path: Path, fh: IO[bytes]) -> int:
        n = 0
        for batch in Spool.read(fh, self._batch):
            await self._insert(conn, batch)
            n += len(batch)
            if self.metrics:
                self.metrics.replayed.inc(len(batch))
        return n

    async def _insert(self, conn: Conn, rows: list[LedgerRow]) -> None:
        months = {partitions.month_of(r.ts) for r in rows} - self._months
        if months:
            await partitions.ensure_months(conn, months)
            self._months |= months
        await conn.execute(INSERT_SQL, *columns_for_pg(rows), timeout=self._timeout)

    # ------------------------------------------------------------ failures and the spool

    def _failed(self, exc: BaseException) -> None:
        if self.metrics:
            self.metrics.write_failures.inc()
        if self.up or self._backoff == BACKOFF_MIN_S:
            log.warning(
                "ledger: database write failed (%s: %s); spooling to %s",
                type(exc).__name__,
                exc,
                self.spool.path,
            )
        self.up = False
        self._months.clear()  # the database may have been replaced: check partitions again
        self._schema_ok = False  # ... and its schema
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)

    def _to_spool(self, rows: list[LedgerRow], *, sync: bool) -> None:
        try:
            self.spool.append(rows, sync=sync)
        except OSError as exc:  # a full or read-only disk: the rows can only be lost, loudly
            log.error(
                "ledger: %d rows lost, spool %s not writable: %s", len(rows), self.spool.path, exc
            )
            return
        if self.metrics:
            self.metrics.spooled_total.inc(len(rows))

    def _spool_buffer(self, *, sync: bool) -> None:
        if self._buf:
            rows, self._buf = self._buf, []
            self._to_spool(rows, sync=sync)

    def _report(self) -> None:
        m = self.metrics
        if m is None:
            return
        m.buffered.set(len(self._buf))
        m.spooled.set(self.spool.rows)
        oldest = [t for t in (self.spool.oldest_ts, self._buf[0].ts if self._buf else None) if t]
        m.lag.set(max(0.0, self._clock() - min(oldest)) if oldest else 0.0)
