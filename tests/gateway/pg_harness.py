"""PostgreSQL for tests: a uniquely named database on the shared server (127.0.0.1:5432, trust
auth), or a private server (initdb + pg_ctl into a temp dir, its own port) that a test may stop
and start again. The shared server is never stopped."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest

SHARED_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg_bin() -> Path:
    """The newest installed server's binaries (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()


def _run(coro):
    """Run ``coro`` to completion on a loop of its own (callers may be inside a running loop)."""
    out: list = []

    def target() -> None:
        try:
            out.append((True, asyncio.run(coro)))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            out.append((False, exc))

    t = threading.Thread(target=target)
    t.start()
    t.join()
    ok, value = out[0]
    if not ok:
        raise value
    return value


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def migrate_ledger(url: str) -> None:
    """Apply the gateway's ledger migrations to the database at ``url``."""
    from gateway.ledger.db import migrate

    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, "ledger", "gateway.ledger.migrations")
    finally:
        await conn.close()


@contextmanager
def fresh_database(admin_url: str = SHARED_ADMIN_URL, prefix: str = "gwtest") -> Iterator[str]:
    """Yields the URL of a new empty database; drops it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        _run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """A throw-away PostgreSQL 15 server on its own port. Runs as the ``postgres`` user when the
    tests run as root (initdb refuses root)."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            pytest.fail(f"the tests need PostgreSQL server binaries (initdb) in {PG_BIN}")
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="gw-pg-"))
        self.data = self.root / "data"
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _cmd(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._cmd(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._cmd(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "immediate") -> None:
        self._cmd(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.destroy()
