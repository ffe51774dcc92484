"""The ledger's schema: its migrations, applied by ``gateway ledger migrate`` and by the writer
when it connects, so that upgrading the gateway upgrades an existing ledger table in place
(a new column would otherwise fail every insert until someone ran the migration)."""

from __future__ import annotations

from gateway.ledger.db import Conn, migrate

__all__ = ["COMPONENT", "MIGRATIONS", "ensure_schema"]

COMPONENT = "ledger"
MIGRATIONS = "gateway.ledger.migrations"


async def ensure_schema(conn: Conn) -> list[str]:
    """Apply the ledger migrations this database lacks; returns the names applied now."""
    return await migrate(conn, COMPONENT, MIGRATIONS)
