"""The ledger writer against real PostgreSQL: batches, no double count, and a database that stops
during traffic (a private server, stopped and started again): rows spool to disk and are
replayed in order when it returns, or by the next process after a restart."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import orjson
import pytest
from pg_harness import fresh_database, migrate_ledger, private_postgres
from prometheus_client import CollectorRegistry

from gateway.ledger import partitions
from gateway.ledger.db import Migration, applied_versions, load_migrations, migrate, open_pool
from gateway.ledger.metrics import LedgerMetrics
from gateway.ledger.row import COLUMNS, LedgerRow, new_request_id
from gateway.ledger.writer import LedgerWriter


def row(i: int, ts: float | None = None, team: str = "t", cost: float = 0.001) -> LedgerRow:
    return LedgerRow(
        ts or time.time(), new_request_id(), team, "k", "auto", "chat", "everyday", "local", "m",
        i % 2 == 0, 200, False, 10, 5, 0, 0, cost, 0.01, 12.5, 0.3, "miss", None,
    )  # fmt: skip


async def _count(url: str) -> tuple[int, float, int]:
    conn = await asyncpg.connect(url)
    try:
        r = await conn.fetchrow(
            "SELECT count(*) n, coalesce(sum(cost_usd), 0) c, count(DISTINCT request_id) d FROM gateway_ledger"
        )
        return r["n"], r["c"], r["d"]
    finally:
        await conn.close()


async def _wait_rows(url: str, n: int, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    got = -1
    while time.monotonic() < deadline:
        try:
            got = (await _count(url))[0]
        except (OSError, asyncpg.PostgresError):
            got = -1
        if got >= n:
            return got
        await asyncio.sleep(0.2)
    return got


@pytest.fixture
def db():
    with fresh_database() as url:
        asyncio.run(migrate_ledger(url))
        yield url


def test_migrations_are_numbered_and_idempotent(db):
    assert [m.name for m in load_migrations("gateway.ledger.migrations")][0] == "0001_ledger.sql"

    async def again():
        conn = await asyncpg.connect(db)
        try:
            assert await migrate(conn, "ledger", "gateway.ledger.migrations") == []
            idx = {
                r["indexname"]
                for r in await conn.fetch(
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'gateway_ledger'"
                )
            }
            assert {"gateway_ledger_ts", "gateway_ledger_team_ts", "gateway_ledger_key_ts"} <= idx
        finally:
            await conn.close()

    asyncio.run(again())


async def _old_schema(url: str) -> None:
    """The ledger as the gateway before cache_write_tokens left it: migration 1 applied and
    recorded, a partition of this month, one row in it."""
    first: Migration = load_migrations("gateway.ledger.migrations")[0]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(first.sql)
        assert await applied_versions(conn, "ledger") == set()  # creates the bookkeeping table
        await conn.execute(
            "INSERT INTO gateway_schema_migrations (component, version, name) VALUES ($1, $2, $3)",
            "ledger",
            first.version,
            first.name,
        )
        await partitions.ensure_months(conn, {partitions.month_of(time.time())})
        await conn.execute(
            "INSERT INTO gateway_ledger (ts, request_id, team, virtual_model, protocol, rule,"
            " backend, model, self_hosted, status, stream, prompt_tokens, completion_tokens,"
            " cached_tokens, cost_usd, savings_usd, latency_ms, overhead_ms, cache) VALUES"
            " (now(), $1::uuid, 'old', 'auto', 'chat', 'r', 'b', 'm', false, 200, false, 9, 1, 3,"
            " 0.5, 0, 1, 1, 'miss')",
            new_request_id(),
        )
    finally:
        await conn.close()


async def test_the_writer_upgrades_an_old_ledger_table_in_place(tmp_path):
    """A deployment's table from before cache_write_tokens (with rows) gets the column when the
    upgraded writer connects; old rows read 0, new ones carry the value, and a spool line the
    old gateway left (one field fewer) is replayed with 0."""
    with fresh_database() as url:
        await _old_schema(url)
        old_spooled = list(row(7))
        del old_spooled[COLUMNS.index("cache_write_tokens")]
        (tmp_path / "ledger-0123.spool").write_bytes(orjson.dumps(old_spooled) + b"\n")
        w = LedgerWriter(url, tmp_path, flush_interval_s=0.05)
        w.start()
        r = row(1)._replace(cached_tokens=40, cache_write_tokens=25)
        w.record(r)
        assert await _wait_rows(url, 3) == 3
        await w.close()
        conn = await asyncpg.connect(url)
        try:
            got = {
                x["request_id"].hex: (x["team"], x["cached_tokens"], x["cache_write_tokens"])
                for x in await conn.fetch("SELECT * FROM gateway_ledger")
            }
            versions = await conn.fetch("SELECT version FROM gateway_schema_migrations")
        finally:
            await conn.close()
        assert got[r.request_id] == ("t", 40, 25)
        assert got[old_spooled[1]] == ("t", 0, 0)
        assert sorted(v for k, v in got.items() if k not in (r.request_id, old_spooled[1])) == [
            ("old", 3, 0)
        ]
        assert sorted(v["version"] for v in versions) == [1, 2]


async def test_an_up_to_date_schema_is_checked_without_ddl(db):
    """A writer whose database user may not create tables still starts: nothing to apply means
    no CREATE, no lock, only a read."""
    role = f"ledger_ro_{new_request_id()[:12]}"  # roles are per server: a name of its own
    conn = await asyncpg.connect(db)
    await conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        await conn.execute(f"GRANT SELECT ON gateway_schema_migrations TO {role}")
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        ro = await asyncpg.connect(db, user=role)
        try:
            assert await migrate(ro, "ledger", "gateway.ledger.migrations") == []
        finally:
            await ro.close()
    finally:
        await conn.execute(f"REVOKE ALL ON gateway_schema_migrations FROM {role}")
        await conn.execute(f"DROP ROLE {role}")
        await conn.close()


async def test_rows_are_written_in_batches_and_a_replay_never_double_counts(db, tmp_path):
    reg = CollectorRegistry()
    w = LedgerWriter(
        db, tmp_path, batch_size=100, flush_interval_s=0.05, metrics=LedgerMetrics(reg)
    )
    w.start()
    rows = [row(i) for i in range(1000)]
    for r in rows:
        w.record(r)
    assert await _wait_rows(db, 1000) == 1000
    # the same rows again (what a replay after a lost acknowledgement does): still 1000
    for r in rows[:300]:
        w.record(r)
    await w.close()
    n, cost, distinct = await _count(db)
    assert (n, distinct) == (1000, 1000) and cost == pytest.approx(1.0)
    assert reg.get_sample_value("gateway_ledger_rows_total", {"result": "written"}) == 1300


async def test_rows_of_another_month_get_their_partition(db, tmp_path):
    w = LedgerWriter(db, tmp_path, flush_interval_s=0.05)
    w.start()
    old = time.mktime((2025, 3, 15, 12, 0, 0, 0, 0, 0))
    w.record(row(0, ts=old))
    w.record(row(1))
    await w.close()
    conn = await asyncpg.connect(db)
    try:
        months = await partitions.existing_months(conn)
        assert (2025, 3) in months and partitions.month_of(time.time()) in months
        assert await partitions.prune(conn, keep_months=2) == ["gateway_ledger_2025_03"]
        assert await conn.fetchval("SELECT count(*) FROM gateway_ledger") == 1
    finally:
        await conn.close()


async def test_database_stopped_during_traffic_rows_spool_and_replay_in_order(tmp_path):
    with private_postgres() as pg:
        with fresh_database(pg.admin_url) as url:
            await migrate_ledger(url)
            reg = CollectorRegistry()
            w = LedgerWriter(
                url, tmp_path, batch_size=50, flush_interval_s=0.05, write_timeout_s=1.0,
                metrics=LedgerMetrics(reg),
            )  # fmt: skip
            w.start()
            sent: list[LedgerRow] = []

            async def traffic(n: int) -> float:
                """Record n rows as requests would; returns the slowest record() call."""
                worst = 0.0
                for i in range(n):
                    r = row(len(sent) + i)
                    t = time.perf_counter()
                    w.record(r)
                    worst = max(worst, time.perf_counter() - t)
                    sent.append(r)
                    await asyncio.sleep(0.001)
                return worst

            await traffic(200)
            assert await _wait_rows(url, 200) == 200
            pg.stop()
            await traffic(300)  # the database is gone: these go to the spool
            # every row of this phase reaches the spool (a failed write, then a flush per
            # interval while backing off): wait for that, not a fixed time, so that all 300 are
            # replayed rather than some written from memory after the restart
            deadline = time.monotonic() + 30
            while w.spool.rows < 300:
                assert time.monotonic() < deadline, f"{w.spool.rows} of 300 rows spooled"
                await asyncio.sleep(0.05)
            assert reg.get_sample_value("gateway_ledger_rows_total", {"result": "spooled"}) > 0
            assert reg.get_sample_value("gateway_ledger_write_failures_total") >= 1
            pg.start()
            await traffic(200)
            assert await _wait_rows(url, 700) == 700
            await w.close()
            n, cost, distinct = await _count(url)
            assert (n, distinct) == (700, 700)
            assert cost == pytest.approx(sum(r.cost_usd for r in sent))
            assert reg.get_sample_value("gateway_ledger_rows_total", {"result": "replayed"}) >= 300
            assert w.spool.rows == 0


async def test_a_restart_replays_what_the_previous_process_spooled(tmp_path):
    with private_postgres() as pg:
        with fresh_database(pg.admin_url) as url:
            await migrate_ledger(url)
            pg.stop()
            first = LedgerWriter(url, tmp_path, flush_interval_s=0.05, write_timeout_s=1.0)
            first.start()
            rows = [row(i) for i in range(120)]
            for r in rows:
                first.record(r)
            await first.close()  # database down: everything is in first's spool file
            assert list(tmp_path.glob("ledger-*.spool"))
            pg.start()
            second = LedgerWriter(url, tmp_path, flush_interval_s=0.05)
            second.start()
            assert await _wait_rows(url, 120) == 120
            await second.close()
            assert (await _count(url))[0] == 120
            assert not [p for p in tmp_path.glob("ledger-*.spool") if p.stat().st_size]


async def test_record_costs_a_list_append_even_when_the_database_is_unreachable(tmp_path):
    # nothing listens on this port: every flush fails; record() must still return at once
    w = LedgerWriter(
        "postgresql://postgres@127.0.0.1:9/none",
        tmp_path,
        batch_size=20,
        flush_interval_s=0.01,
        max_buffer_rows=50,
    )
    w.start()
    # record() is synchronous: the loop (and so any flush or connect attempt) cannot run inside
    # this loop. What it must do on its own is keep memory bounded: past max_buffer_rows it spools.
    peak = 0
    for i in range(2000):
        w.record(row(i))
        peak = max(peak, len(w._buf))
    assert peak < 50  # never more than max_buffer_rows held in memory while the database is down
    spooled_before_any_flush = w.spool.rows
    assert spooled_before_any_flush >= 2000 - 50
    await asyncio.sleep(0.2)
    await w.close()
    lines = sum(p.read_bytes().count(b"\n") for p in tmp_path.glob("ledger-*.spool"))
    assert lines == 2000  # bounded memory, nothing lost: all in the spool


async def test_pool_for_reports_is_shared(db, tmp_path):
    w = LedgerWriter(db, tmp_path)
    pool = await w.pool()
    assert pool is await w.pool()
    await w.close()
    _ = open_pool  # the shared helper other components use
