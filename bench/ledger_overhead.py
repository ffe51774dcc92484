"""The spend ledger's CPU cost per request (goal: under 50 us), measured three ways in one run.

1. record path: what a request adds when the ledger is on (request id + row + list append),
   CPU time per call over many calls in this process.
2. flush: this process's CPU per row to batch the rows into PostgreSQL (encoding, the INSERT),
   which also runs on the gateway's event loop (the server's own CPU is not counted).
3. end to end: two `gateway serve` processes against the same mock upstream, ledger off and on,
   in alternating rounds of sequential requests; CPU per request of each gateway process read
   from /proc/PID/schedstat (ns), per-round paired difference. Waits a flush interval after each
   round so the flush CPU lands in the round that caused it.

    python bench/ledger_overhead.py [--rounds 5] [--requests 2000] [--out bench/results/ledger_overhead.json]

Needs PostgreSQL on 127.0.0.1:5432 (trust auth); creates and drops its own database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_bench_targets import HOST, ROOT, free_port, process, start_mock, wait_ready  # noqa: E402

sys.path.insert(0, str(ROOT))
from gateway.ledger.db import migrate  # noqa: E402
from gateway.ledger.row import LedgerRow, new_request_id  # noqa: E402
from gateway.ledger.writer import LedgerWriter  # noqa: E402

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POLICY = """\
cache: {{enabled: false, namespace: "bench-{ns}"}}
{ledger}
backends:
  up:
    kind: openai_compatible
    base_url: "{upstream}"
    model: mock-model
    self_hosted: true
    pricing: {{input_usd_per_mtok: 1, output_usd_per_mtok: 2}}
models:
  auto: {{route: up}}
"""


def cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def _row() -> LedgerRow:
    return LedgerRow(
        time.time(), new_request_id(), "team", "key", "auto", "chat", "everyday", "up",
        "mock-model", True, 200, False, 12, 13, 0, 0, 0.0001, 0.001, 3.2, 0.4, "bypass", None,
    )  # fmt: skip


def bench_record(n: int, rounds: int) -> list[float]:
    """us of CPU per request for request id + row + record()."""

    class Sink(LedgerWriter):
        def __init__(self) -> None:  # no pool, no task: only the request-path part
            self._buf = []
            self._batch = 10**9
            self._max = 10**9

    out = []
    for _ in range(rounds):
        sink = Sink()
        t = time.process_time_ns()
        for _ in range(n):
            sink.record(_row())
        out.append((time.process_time_ns() - t) / n / 1000)
    return out


async def bench_flush(url: str, n: int, spool: Path) -> float:
    """us of this process's CPU per row written (rows built beforehand)."""
    rows = [_row() for _ in range(n)]
    w = LedgerWriter(url, spool, batch_size=500, flush_interval_s=0.05)
    await w.pool()  # connect outside the measurement
    t = time.process_time_ns()
    w.start()
    for i in range(0, n, 500):  # as traffic would: a batch's worth, then the loop runs on
        for r in rows[i : i + 500]:
            w.record(r)
        while w._buf:  # wait for the writer to take the batch (as traffic at ~1 batch/flush)
            await asyncio.sleep(0.001)
    await w.close(timeout_s=60)
    if w.spool.rows or w.metrics:
        raise RuntimeError("the flush bench spilled to the spool; it measures the normal path")
    return (time.process_time_ns() - t) / n / 1000


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _migrate(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, "ledger", "gateway.ledger.migrations")
        return 0
    finally:
        await conn.close()


async def _count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM gateway_ledger"))
    finally:
        await conn.close()


def start_gateway(
    stack: ExitStack, work: Path, name: str, upstream: str, ledger: str
) -> tuple[int, str]:
    policy = work / f"{name}.yaml"
    policy.write_text(POLICY.format(upstream=upstream, ledger=ledger, ns=uuid.uuid4().hex))
    port = free_port()
    log = work / f"{name}.log"
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--policy", str(policy), "--host", HOST,
           "--port", str(port), "--log-level", "warning", "--watch-interval", "0"]  # fmt: skip
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin:/usr/local/bin"}
    import os

    env = {**os.environ, **env}
    proc = stack.enter_context(process(cmd, log, env))
    wait_ready(f"http://{HOST}:{port}/health", proc, log)
    return proc.pid, f"http://{HOST}:{port}/v1/chat/completions"


def run_round(client: httpx.Client, url: str, pid: int, n: int, settle_s: float) -> float:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
    t = cpu_ns(pid)
    for _ in range(n):
        r = client.post(url, json=body)
        if r.status_code != 200:
            raise RuntimeError(f"gateway answered {r.status_code}: {r.text[:200]}")
    time.sleep(settle_s)  # the flush of this round's rows runs now and is counted here
    return (cpu_ns(pid) - t) / n / 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument(
        "--flush-interval", type=float, default=0.5, help="the ledger's flush_interval_s"
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ledger_overhead.json"))
    args = ap.parse_args()

    rec = bench_record(200_000, args.rounds)
    print(
        f"record path: {statistics.median(rec):.2f} us CPU per request (median of {args.rounds} rounds of 200k)"
    )

    name = f"ledger_bench_{uuid.uuid4().hex[:10]}"
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(_migrate(url))
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            flush = asyncio.run(bench_flush(url, 50_000, work / "spool-bench"))
            print(f"flush: {flush:.2f} us CPU per row in the writing process (50k rows)")
            with ExitStack() as stack:
                upstream = start_mock(stack, work, 0, 4)
                ledger = (
                    f'ledger: {{database_url: "{url}", spool_dir: "{work / "spool"}", '
                    f"flush_interval_s: {args.flush_interval}, max_buffer_rows: 100000}}"
                )
                off_pid, off_url = start_gateway(stack, work, "off", upstream, "")
                on_pid, on_url = start_gateway(stack, work, "on", upstream, ledger)
                before = asyncio.run(_count(url))
                offs, ons, diffs = [], [], []
                with httpx.Client(timeout=30) as client:
                    for warm_url, warm_pid in ((off_url, off_pid), (on_url, on_pid)):
                        run_round(client, warm_url, warm_pid, 200, 0.0)
                    for i in range(args.rounds):
                        order = [(off_url, off_pid, offs), (on_url, on_pid, ons)]
                        if i % 2:
                            order.reverse()
                        for u, pid, acc in order:
                            acc.append(run_round(client, u, pid, args.requests, 0.8))
                        diffs.append(ons[-1] - offs[-1])
                        print(f"  round {i + 1}: off {offs[-1]:.1f} us/req, on {ons[-1]:.1f} us/req, "
                              f"difference {diffs[-1]:+.1f} us")  # fmt: skip
                written = asyncio.run(_count(url)) - before
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    expected = 200 + args.rounds * args.requests
    result = {
        "command": "python bench/ledger_overhead.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "record_path_us_cpu_per_request": round(statistics.median(rec), 3),
        "flush_us_cpu_per_row": round(flush, 3),
        "gateway_cpu_us_per_request_ledger_off": [round(x, 1) for x in offs],
        "gateway_cpu_us_per_request_ledger_on": [round(x, 1) for x in ons],
        "per_round_difference_us": [round(x, 1) for x in diffs],
        "median_difference_us": round(statistics.median(diffs), 1),
        "median_ratio_on_over_off": round(
            statistics.median(o / f for o, f in zip(ons, offs, strict=True)), 4
        ),
        "rows_written": written,
        "rows_expected": expected,
        "goal_us": 50,
    }
    print(
        f"gateway CPU per request: off {statistics.median(offs):.1f} us, on {statistics.median(ons):.1f} us; "
        f"median per-round difference {result['median_difference_us']:+.1f} us "
        f"(ratio {result['median_ratio_on_over_off']:.3f}); rows written {written}/{expected}"
    )
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
