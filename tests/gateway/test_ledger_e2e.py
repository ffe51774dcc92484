"""The ledger through a real gateway (real PostgreSQL, loopback mocks, the official SDK): one row
per finished request (streams, cache hits and errors included), and the reports from
``gateway usage`` and ``GET /admin/usage`` agree with what was sent."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import openai
import pytest
from gateway_server import running_gateway
from openai import OpenAI
from pg_harness import fresh_database, migrate_ledger

from tests.support.mock_openai import running_mock_openai
from tests.support.policy import client_key, local_backend, openai_backend, policy_yaml
from tests.support.servers import MockControl


def _policy(local: str, gpt: str, db: str, spool: Path, ns: str) -> str:
    keys = [client_key("alice", "KEY_A", "legal"), client_key("bob", "KEY_B", "research")]
    return policy_yaml(
        auth={"admin_key": "os.environ/ADMIN_KEY", "keys": keys},
        cache={"enabled": True, "namespace": ns},
        ledger={"database_url": db, "spool_dir": str(spool), "flush_interval_s": 0.05},
        savings={"reference_pricing": {"input_usd_per_mtok": 10, "output_usd_per_mtok": 30}},
        backends={
            "local": local_backend(
                local, model="m", pricing={"input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.2}
            ),
            "gpt": openai_backend(
                gpt, api_key=None, pricing={"input_usd_per_mtok": 2.5, "output_usd_per_mtok": 10}
            ),
        },
        models={"auto": {"route": "local", "fallbacks": ["gpt"]}, "gpt-4o": {"route": "gpt"}},
    )


ENV = {"KEY_A": "key-a-secret", "KEY_B": "key-b-secret", "ADMIN_KEY": "admin-secret"}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def _rows(url: str) -> list[dict]:
    conn = await asyncpg.connect(url)
    try:
        return [dict(r) for r in await conn.fetch("SELECT * FROM gateway_ledger ORDER BY ts")]
    finally:
        await conn.close()


def wait_rows(url: str, n: int, timeout_s: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = asyncio.run(_rows(url))
        if len(rows) >= n:
            return rows
        time.sleep(0.1)
    return rows


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with (
        fresh_database() as db,
        running_mock_openai(MockControl(models=["m"])) as (local, local_ctl),
        running_mock_openai(MockControl(models=["gpt-4o"])) as (gpt, gpt_ctl),
    ):
        asyncio.run(migrate_ledger(db))
        d = tmp_path_factory.mktemp("ledger")
        policy = d / "p.yaml"
        policy.write_text(_policy(local, gpt, db, d / "spool", f"led-{uuid.uuid4().hex}"))
        with running_gateway(policy, ENV) as (base, app):
            yield base, db, local_ctl, gpt_ctl, policy


def client(base: str, key: str = "KEY_A") -> OpenAI:
    return OpenAI(base_url=base + "/v1", api_key=ENV[key], max_retries=0)


def test_every_finished_request_writes_one_row(stack):
    base, db, local_ctl, gpt_ctl, _ = stack
    a, b = client(base), client(base, "KEY_B")
    msg = [{"role": "user", "content": "what is two plus two"}]
    r1 = a.chat.completions.with_raw_response.create(model="auto", messages=msg, temperature=0)
    rid = r1.headers["x-gateway-request-id"]
    a.chat.completions.create(model="auto", messages=msg, temperature=0)  # cache hit
    chunks = list(b.chat.completions.create(model="gpt-4o", messages=msg, stream=True))
    assert chunks
    local_ctl.fail_next(2, status=500)  # local fails (and its retry): falls back to gpt
    b.chat.completions.create(model="auto", messages=[{"role": "user", "content": "fallback"}])
    with pytest.raises(openai.NotFoundError):
        a.chat.completions.create(model="nope", messages=msg)
    rows = wait_rows(db, 5)
    assert len(rows) == 5
    by_id = {r["request_id"].hex: r for r in rows}
    first = by_id[rid]
    assert (first["team"], first["key_name"], first["virtual_model"], first["backend"]) == (
        "legal", "alice", "auto", "local",
    )  # fmt: skip
    assert first["self_hosted"] and first["status"] == 200 and first["cache"] == "miss"
    assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0
    assert first["cost_usd"] == pytest.approx(
        (first["prompt_tokens"] * 0.1 + first["completion_tokens"] * 0.2) / 1e6
    )
    assert first["savings_usd"] > 0 and first["model"] == "m" and first["protocol"] == "chat"
    hit = [r for r in rows if r["cache"] == "hit"]
    assert len(hit) == 1 and hit[0]["self_hosted"] and hit[0]["cost_usd"] == 0
    stream = [r for r in rows if r["stream"]]
    assert len(stream) == 1 and stream[0]["backend"] == "gpt" and not stream[0]["self_hosted"]
    assert stream[0]["completion_tokens"] > 0 and stream[0]["cost_usd"] > 0
    fb = [r for r in rows if r["team"] == "research" and not r["stream"]][0]
    assert fb["backend"] == "gpt" and not fb["self_hosted"]
    err = [r for r in rows if r["status"] == 404]
    assert len(err) == 1 and err[0]["virtual_model"] == "unknown" and err[0]["cost_usd"] == 0
    # the key itself is nowhere in the ledger
    assert not any(ENV["KEY_A"] in json.dumps(r, default=str) for r in rows)


def test_other_protocols_and_a_stream_cut_upstream_are_ledgered(stack):
    import anthropic

    base, db, local_ctl, gpt_ctl, _ = stack
    n = len(wait_rows(db, 5))
    ac = anthropic.Anthropic(base_url=base, api_key=ENV["KEY_A"], max_retries=0)
    msg = ac.messages.create(
        model="auto", max_tokens=32, messages=[{"role": "user", "content": "anthropic please"}]
    )
    assert msg.content
    # an upstream stream that breaks after two events: the client gets an in-band error and the
    # ledger charges what was produced (usage never arrived)
    gpt_ctl.break_stream_next(after_events=3)
    with httpx.stream(
        "POST",
        base + "/v1/chat/completions",
        json={
            "model": "gpt-4o",
            "stream": True,
            "messages": [{"role": "user", "content": "one two three four five six"}],
        },
        headers={"Authorization": "Bearer " + ENV["KEY_B"]},
        timeout=30,
    ) as r:
        body = r.read()
    assert r.status_code == 200 and b"error" in body
    rows = wait_rows(db, n + 2)
    assert len(rows) == n + 2
    new = sorted(rows, key=lambda r: r["ts"])[-2:]
    proto = {r["protocol"]: r for r in new}
    assert set(proto) == {"anthropic", "chat"}
    assert proto["anthropic"]["backend"] == "local" and proto["anthropic"]["completion_tokens"] > 0
    cut = proto["chat"]
    assert cut["status"] == 502 and cut["stream"] and cut["backend"] == "gpt"
    assert cut["completion_tokens"] > 0 and cut["cost_usd"] > 0  # charged for what it produced


def _cli_usage(db: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT, "DATABASE_URL": db}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "usage", *args],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def test_usage_cli_and_admin_endpoint_agree_with_the_rows(stack):
    base, db, *_ = stack
    rows = wait_rows(db, 5)
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    got = _cli_usage(db, "--since", since, "--by", "team", "--format", "json")
    assert got.returncode == 0, got.stderr
    report = json.loads(got.stdout)
    teams = {r["team"]: r for r in report}
    for team in ("legal", "research"):
        mine = [r for r in rows if r["team"] == team]
        t = teams[team]
        assert t["requests"] == len(mine)
        assert t["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in mine), abs=1e-9)
        assert t["savings_usd"] == pytest.approx(sum(r["savings_usd"] for r in mine), abs=1e-9)
        assert t["prompt_tokens"] == sum(r["prompt_tokens"] for r in mine)
        for col in ("cached_tokens", "cache_write_tokens"):
            assert t[col] == sum(r[col] for r in mine)
        assert t["self_hosted_share"] == pytest.approx(
            sum(r["self_hosted"] for r in mine) / len(mine), abs=1e-6
        )
    admin = httpx.get(
        base + "/admin/usage",
        params={"since": since, "by": "team"},
        headers={"Authorization": "Bearer " + ENV["ADMIN_KEY"]},
    )
    assert admin.status_code == 200 and admin.json() == report
    # the other formats and groupings
    csv_out = _cli_usage(db, "--since", since, "--by", "team,backend", "--format", "csv")
    assert csv_out.stdout.splitlines()[0].startswith(
        "team,backend,requests,prompt_tokens,completion_tokens,cached_tokens,cache_write_tokens,"
    )
    table = _cli_usage(db, "--since", since, "--team", "legal", "--by", "day")
    assert "legal" not in table.stdout and datetime.now(UTC).strftime("%Y-%m-%d") in table.stdout


def test_admin_usage_needs_the_admin_key_and_valid_dates(stack):
    base, *_ = stack
    assert httpx.get(base + "/admin/usage", params={"since": "2025-01-01"}).status_code == 401
    auth = {"Authorization": "Bearer " + ENV["ADMIN_KEY"]}
    bad = httpx.get(base + "/admin/usage", params={"since": "yesterday"}, headers=auth)
    assert bad.status_code == 400 and "not a date" in bad.json()["error"]["message"]
    bad = httpx.get(base + "/admin/usage", params={"since": "2025-01-01", "by": "x"}, headers=auth)
    assert bad.status_code == 400
    assert httpx.get(base + "/admin/usage", headers=auth).status_code == 400


def test_migrate_cli_is_idempotent(stack):
    _, db, *_ = stack
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "ledger", "migrate", "--database-url", db],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0 and "up to date" in out.stdout
