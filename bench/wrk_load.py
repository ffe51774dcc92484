"""Load generation with ``wrk`` (C, one pinned thread) and per-run CPU accounting of the server.

A Lua script sets the POST body and the auth header and prints wrk's exact percentiles as
one JSON line. Each run also reads the server process's CPU time from /proc before and
after, so ``cpu_us_per_req`` stays meaningful on a machine shared with other work (wall-clock
throughput does not).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LoadError", "Run", "cpu_seconds", "run_wrk", "wait_idle", "write_script"]

TICKS = os.sysconf("SC_CLK_TCK")

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_JSON {{"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f}}\\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean))
end
"""


class LoadError(RuntimeError):
    """wrk failed, or the target answered with errors under load."""


@dataclass
class Run:
    """One wrk run against one target."""

    connections: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    cpu_us_per_req: float | None  # the server process's CPU time per request (None: not known)


def write_script(path: Path, body: bytes, key: str) -> Path:
    if b"]==]" in body:
        raise ValueError(
            "the request body may not contain ']==]' (it is written as a Lua long string)"
        )
    path.write_text(WRK_SCRIPT.format(body="[==[" + body.decode() + "]==]", key=key))
    return path


def _pids(pid: int) -> list[int]:
    """``pid`` and its direct children (a server may fork one worker)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        out += [int(c) for c in task.read_text().split()]
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its children so far."""
    total = 0
    for p in _pids(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / TICKS


def wait_idle(
    pid: int, max_s: float = 60.0, interval_s: float = 0.25, busy_share: float = 0.1
) -> bool:
    """Wait until ``pid`` uses under ``busy_share`` of a core (it may still be working off the
    requests a finished load left queued); False if it stayed busy for ``max_s``."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        c0 = cpu_seconds(pid)
        time.sleep(interval_s)
        if cpu_seconds(pid) - c0 < busy_share * interval_s:
            return True
    return False


def run_wrk(
    url: str,
    script: Path,
    connections: int,
    seconds: int,
    core: int,
    server_pid: int | None,
    timeout_s: int = 10,
) -> Run:
    cmd = [
        "taskset",
        "-c",
        str(core),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(script),
        url,
    ]
    if server_pid:
        wait_idle(server_pid)
    cpu0 = cpu_seconds(server_pid) if server_pid else None
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False
    )
    cpu1 = cpu_seconds(server_pid) if server_pid else None
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise LoadError(f"wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    d = json.loads(line.removeprefix("BENCH_JSON "))
    if d["requests"] == 0:
        raise LoadError(f"{url}: no request completed in {seconds} s")
    if d["non2xx"] or d["socket_errors"]:
        raise LoadError(
            f"{url}: {d['non2xx']} non-2xx answers and {d['socket_errors']} socket errors under load"
        )
    secs = d["duration_us"] / 1e6
    cpu = None if cpu0 is None else round((cpu1 - cpu0) * 1e6 / d["requests"], 1)
    return Run(
        connections=connections,
        requests=d["requests"],
        seconds=round(secs, 3),
        rps=round(d["requests"] / secs, 1),
        p50_ms=d["p50_us"] / 1000,
        p90_ms=d["p90_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        mean_ms=round(d["mean_us"] / 1000, 3),
        cpu_us_per_req=cpu,
    )
