"""``gateway ledger migrate|prune`` and ``gateway usage``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

__all__ = ["register"]

PARTITIONS_AHEAD = 3  # months created in advance by migrate


def _url(args: argparse.Namespace) -> str:
    if args.database_url:
        return str(args.database_url)
    if args.policy:
        from gateway.config.loader import load_policy

        url = load_policy(args.policy, os.environ).policy.ledger.database_url
        if url:
            return url
    raise SystemExit(
        "no database: pass --database-url, set DATABASE_URL, or --policy with ledger.database_url"
    )


async def _migrate(url: str) -> list[str]:
    import time

    from gateway.ledger import partitions
    from gateway.ledger.db import open_pool
    from gateway.ledger.schema import ensure_schema

    pool = await open_pool(url)
    try:
        async with pool.acquire() as conn:
            done = await ensure_schema(conn)
            months = set(partitions.months_ahead(time.time(), PARTITIONS_AHEAD))
            await partitions.ensure_months(conn, months)
    finally:
        await pool.close()
    return done


def _cmd_migrate(args: argparse.Namespace) -> int:
    from gateway.ledger.db import DB_ERRORS

    try:
        done = asyncio.run(_migrate(_url(args)))
    except DB_ERRORS as exc:
        print(f"migrate failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"applied: {', '.join(done)}" if done else "schema up to date")
    return 0


async def _prune(url: str, keep: int) -> list[str]:
    from gateway.ledger import partitions
    from gateway.ledger.db import open_pool

    pool = await open_pool(url)
    try:
        async with pool.acquire() as conn:
            return await partitions.prune(conn, keep)
    finally:
        await pool.close()


def _cmd_prune(args: argparse.Namespace) -> int:
    from gateway.ledger.db import DB_ERRORS

    try:
        dropped = asyncio.run(_prune(_url(args), args.keep_months))
    except DB_ERRORS as exc:
        print(f"prune failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"dropped: {', '.join(dropped)}" if dropped else "nothing to drop")
    return 0


async def _usage(url: str, q) -> list[dict]:
    from gateway.ledger.db import open_pool
    from gateway.ledger.report import usage

    pool = await open_pool(url)
    try:
        return await usage(pool, q)
    finally:
        await pool.close()


def _cmd_usage(args: argparse.Namespace) -> int:
    from gateway.ledger.db import DB_ERRORS
    from gateway.ledger.report import UsageQuery, format_rows, parse_day

    try:
        q = UsageQuery(
            since=parse_day(args.since),
            until=parse_day(args.until) if args.until else None,
            by=tuple(b for b in args.by.split(",") if b),
            team=args.team,
            key=args.key,
        )
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    import asyncpg

    try:
        rows = asyncio.run(_usage(_url(args), q))
    except asyncpg.UndefinedTableError:
        print(
            "usage failed: no ledger table here; run `gateway ledger migrate` first",
            file=sys.stderr,
        )
        return 1
    except DB_ERRORS as exc:
        print(f"usage failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(format_rows(rows, q.by, args.format))
    return 0


def _db_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="postgresql://user@host:port/db (default: $DATABASE_URL)",
    )
    p.add_argument("--policy", help="read ledger.database_url from this policy instead")


def register(sub: argparse._SubParsersAction) -> None:
    led = sub.add_parser("ledger", help="the spend ledger's schema in PostgreSQL")
    lsub = led.add_subparsers(dest="ledger_command", required=True)
    m = lsub.add_parser(
        "migrate", help="create or upgrade the ledger tables, indexes and monthly partitions"
    )
    _db_args(m)
    m.set_defaults(func=_cmd_migrate)
    pr = lsub.add_parser("prune", help="retention: drop monthly partitions older than N months")
    _db_args(pr)
    pr.add_argument("--keep-months", type=int, required=True, help="months kept, this one included")
    pr.set_defaults(func=_cmd_prune)

    u = sub.add_parser("usage", help="spend, savings and self-hosted share from the ledger")
    _db_args(u)
    u.add_argument("--since", required=True, help="YYYY-MM-DD (UTC, inclusive)")
    u.add_argument("--until", help="YYYY-MM-DD (UTC, exclusive; default: now)")
    u.add_argument(
        "--by",
        default="team",
        help="group by team, key, backend, model, rule or day; several with commas (team,day)",
    )
    u.add_argument("--team", help="only this team")
    u.add_argument("--key", help="only this key name")
    u.add_argument("--format", choices=["table", "json", "csv"], default="table")
    u.set_defaults(func=_cmd_usage)
