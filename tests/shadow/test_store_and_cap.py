"""Record stores (JSONL, real PostgreSQL) and the daily cap across replicas (real Redis)."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.shadow.cap import ShadowCap
from gateway.shadow.errors import ShadowSourceError, ShadowStoreError
from gateway.shadow.store import JsonlStore, PostgresStore, read_records
from gateway.state.redis import RedisState
from tests.gateway.pg_harness import fresh_database
from tests.gateway.redis_harness import SHARED_URL, namespace_on_shared
from tests.shadow.records_factory import record

DAY = 86400.0


async def test_jsonl_store_appends_and_prunes_old_records(tmp_path):
    path = tmp_path / "sub" / "shadow.jsonl"
    store = JsonlStore(path, retention_days=7)
    await store.open()
    old = record("old", "win", time=time.time() - 8 * DAY)
    new = record("new", "loss")
    await store.write(old)
    await store.write(new)
    assert [r.id for r in read_records(str(path))] == [old.id, new.id]  # oldest first
    await JsonlStore(path, retention_days=7).open()  # a restart applies retention
    assert [r.id for r in read_records(str(path))] == [new.id]


def test_bad_source_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(ShadowSourceError, match="x.jsonl:1"):
        read_records(str(p))
    with pytest.raises(ShadowSourceError, match="cannot read"):
        read_records(str(tmp_path / "missing.jsonl"))


def test_postgres_store_round_trip_and_retention():
    with fresh_database(prefix="gwshadow") as url:

        async def write() -> None:
            store = PostgresStore(url, retention_days=3)
            await store.open()
            await store.write(record("kept", "tie", confidence=-0.5))
            await store.write(record("stale", "loss", time=time.time() - 4 * DAY))
            await store.write(record("kept", "tie"))  # same id again: ignored
            await store.close()
            again = PostgresStore(url, retention_days=3)
            await again.open()  # migrations already applied; retention prunes "stale"
            await again.close()

        asyncio.run(write())
        got = read_records(url)
        assert [(r.prompt[0]["content"], r.outcome, r.confidence) for r in got] == [
            ("kept", "tie", -0.5)
        ]


async def test_postgres_store_unreachable_is_a_store_error():
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/none", retention_days=1)
    with pytest.raises(ShadowStoreError):
        await store.open()


async def test_cap_holds_across_two_replicas_sharing_redis():
    async for ns in namespace_on_shared():
        a, b = RedisState(SHARED_URL, namespace=ns), RedisState(SHARED_URL, namespace=ns)
        cap_a, cap_b = ShadowCap(a, 1.0), ShadowCap(b, 1.0)
        results = await asyncio.gather(*(c.reserve(0.3) for c in [cap_a, cap_b] * 3))
        assert sum(results) == 3  # 3 x $0.30 fit under $1, the other three do not
        assert await cap_a.spent_today() == pytest.approx(0.9)
        await cap_b.settle(0.3, 0.1)  # a sample cost less than reserved
        assert await cap_a.spent_today() == pytest.approx(0.7)
        assert await cap_a.reserve(0.3)
        assert await ShadowCap(a, 0.0).reserve(0.0001) is False  # a zero cap samples nothing
        await a.close()
        await b.close()
