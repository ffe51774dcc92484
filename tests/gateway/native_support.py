"""Helpers of the native pass-through tests: a gateway with a ledger serving a policy, the
ledger's rows, metrics read over HTTP, and waiting for what the gateway records after an
answer is out."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.gateway_server import running_gateway
from tests.gateway.pg_harness import migrate_ledger

__all__ = ["eventually", "ledger_rows", "metric", "migrate_ledger", "samples", "serving"]


@contextmanager
def serving(
    tmp: Path, db: str, env: Mapping[str, str], policy: Callable[..., str], **values: object
) -> Iterator[str]:
    """The real gateway (its URL) serving the text ``policy(ns=, db=, spool=, **values)`` gives
    (e.g. a template's ``str.format``): ``ns`` a fresh cache namespace, ``db`` the ledger's
    database (migrated), ``spool`` a folder in ``tmp``."""
    asyncio.run(migrate_ledger(db))
    path = tmp / "policy.yaml"
    ns = f"{tmp.name}-{uuid.uuid4().hex[:8]}"
    path.write_text(policy(ns=ns, db=db, spool=str(tmp / "spool"), **values))
    with running_gateway(path, env) as (url, _app):
        yield url


def ledger_rows(url: str, ids: list[str], timeout_s: float = 20.0) -> dict[str, dict]:
    """The ledger rows of these request ids, once all are written (the writer batches)."""

    async def fetch() -> list[dict]:
        conn = await asyncpg.connect(url)
        try:
            sql = "SELECT * FROM gateway_ledger WHERE replace(request_id::text, '-', '') = ANY($1)"
            return [dict(r) for r in await conn.fetch(sql, [i.replace("-", "") for i in ids])]
        finally:
            await conn.close()

    deadline = time.monotonic() + timeout_s
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = asyncio.run(fetch())
        if len(rows) == len(ids):
            break
        time.sleep(0.1)
    return {str(r["request_id"]).replace("-", ""): r for r in rows}


def samples(url: str, name: str, **labels: str) -> list[float]:
    text = httpx.get(url + "/metrics").text
    return [
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def metric(url: str, name: str, **labels: str) -> float:
    return sum(samples(url, name, **labels))


def eventually(check, timeout_s: float = 20.0):
    """``check()``'s value once it is truthy: the gateway records metrics and spend after the
    answer is out, so a client may look before they are written."""
    deadline = time.monotonic() + timeout_s
    while not (got := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return got
