"""PostgreSQL plumbing shared by everything the gateway keeps in a database (asyncpg).

Two things live here, for the ledger and for any other component with tables of its own:

- ``open_pool(url)``: an asyncpg pool with short timeouts, no statement cache surprises and the
  errors the callers must survive gathered in ``DB_ERRORS``;
- ``migrate(conn, component, package)``: applies the numbered ``NNNN_name.sql`` files found in a
  Python package (``importlib.resources``), in order, each in its own transaction, and records
  them in ``gateway_schema_migrations`` under ``component``. An advisory lock makes two
  processes migrating at once safe; an applied file is never run again.

Example for another component::

    pool = await open_pool(url)
    async with pool.acquire() as conn:
        await migrate(conn, "shadow", "gateway.shadow.migrations")
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A connection of its own or one lent by a pool: both run the same queries.
Conn = asyncpg.Connection | PoolConnectionProxy

__all__ = [
    "Conn",
    "DB_ERRORS",
    "Migration",
    "applied_versions",
    "load_migrations",
    "migrate",
    "open_pool",
]

DEFAULT_CONNECT_TIMEOUT_S = 2.0
DEFAULT_COMMAND_TIMEOUT_S = 10.0
# A fixed key for pg_advisory_lock: "migrations of the gateway's schemas"
MIGRATION_LOCK_KEY = 0x6761_7465_7761_79  # "gateway"

# What a database call can raise that callers must survive (server gone, refused, timed out).
DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS gateway_schema_migrations (
    component  text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


async def open_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 4,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
) -> asyncpg.Pool:
    """A pool for ``url`` (``postgresql://user@host:port/db``). Raises one of DB_ERRORS if the
    server cannot be reached within ``connect_timeout_s``."""
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=connect_timeout_s,
        command_timeout=command_timeout_s,
        max_inactive_connection_lifetime=60.0,
    )
    return pool


def load_migrations(package: str) -> list[Migration]:
    """The ``NNNN_name.sql`` files of ``package``, ordered by number; other files are ignored."""
    found: list[Migration] = []
    for entry in resources.files(package).iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda x: x.version)
    versions = [x.version for x in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"{package}: two migrations share a number: {versions}")
    return found


async def _versions(conn: Conn, component: str) -> set[int]:
    rows = await conn.fetch(
        "SELECT version FROM gateway_schema_migrations WHERE component = $1", component
    )
    return {r["version"] for r in rows}


async def applied_versions(conn: Conn, component: str) -> set[int]:
    await conn.execute(_BOOKKEEPING)
    return await _versions(conn, component)


async def _up_to_date(conn: Conn, component: str, todo: list[Migration]) -> bool:
    """Read-only: every one of ``todo`` is applied already."""
    if await conn.fetchval("SELECT to_regclass('gateway_schema_migrations')") is None:
        return False
    return {m.version for m in todo} <= await _versions(conn, component)


async def migrate(conn: Conn, component: str, package: str) -> list[str]:
    """Apply ``package``'s migrations that ``component`` lacks; returns the names applied now.
    An up-to-date schema costs one read and no DDL or lock (a process may lack the right to
    create tables and still check)."""
    todo = load_migrations(package)
    if await _up_to_date(conn, component, todo):
        return []
    done: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        have = await applied_versions(conn, component)
        for mig in todo:
            if mig.version in have:
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO gateway_schema_migrations (component, version, name) VALUES ($1, $2, $3)",
                    component,
                    mig.version,
                    mig.name,
                )
            done.append(mig.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return done
