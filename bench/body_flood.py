"""Gateway memory under a body flood: N connections each sending a large body, keyless and
keyed-but-slow, against a real `gateway serve` on loopback. Prints RSS before and at the peak.

    python bench/body_flood.py --connections 50 --body-mb 5

Keyless bodies are refused from the headers (401) and never held; keyed bodies count against
server.max_inflight_body_bytes (503 server_busy past it) and server.body_timeout_s.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

POLICY = """
auth:
  keys:
    - {{name: bench, key: os.environ/BENCH_KEY}}
server: {{max_body_bytes: {max_body}{limits}}}
cache: {{enabled: false}}
backends:
  local: {{kind: openai_compatible, base_url: "http://127.0.0.1:9/v1", model: m, self_hosted: true}}
models:
  auto: {{route: local}}
"""
KEY = "bench-key-body-flood"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flood(port: int, n: int, size: int, key: str | None, statuses: list[str]) -> None:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    chunk = b" " * (256 * 1024)
    # every sender holds its body open one byte short of the end until all have sent the rest
    # (as slow clients do), then sends the last byte
    barrier = threading.Barrier(n)

    def one() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(head)
                sent = 0
                try:
                    while sent < size - 1:
                        part = chunk[: min(len(chunk), size - 1 - sent)]
                        s.sendall(part)
                        sent += len(part)
                except OSError:
                    pass  # the gateway answered and closed before the end
                try:
                    barrier.wait(timeout=30)
                except threading.BrokenBarrierError:
                    pass
                try:
                    s.sendall(b" ")
                except OSError:
                    pass
                data = s.recv(200)
                statuses.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))
        except OSError as exc:
            statuses.append(type(exc).__name__)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--body-mb", type=float, default=5.0)
    ap.add_argument("--inflight-mb", type=int, default=64)
    ap.add_argument(
        "--no-limits",
        action="store_true",
        help="a policy without the body limits (to run against a gateway before them)",
    )
    args = ap.parse_args()
    size = int(args.body_mb * 1024 * 1024)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "p.yaml"
        policy.write_text(
            POLICY.format(
                max_body=size + 1024,
                limits=""
                if args.no_limits
                else f", body_timeout_s: 20, max_inflight_body_bytes: {args.inflight_mb << 20}",
            )
        )
        env = {**os.environ, "BENCH_KEY": KEY}
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--policy", str(policy)]
            + ["--port", str(port), "--watch-interval", "0", "--log-level", "error"],
            env=env,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            time.sleep(1.0)
            for label, key in (("keyless", None), ("keyed", KEY)):
                base = rss_mb(proc.pid)
                peak = base
                statuses: list[str] = []
                t = threading.Thread(
                    target=flood, args=(port, args.connections, size, key, statuses)
                )
                t.start()
                while t.is_alive():
                    peak = max(peak, rss_mb(proc.pid))
                    time.sleep(0.05)
                counts: dict[str, int] = {}
                for s in statuses:
                    counts[s] = counts.get(s, 0) + 1
                print(
                    f"{label}: {args.connections} x {args.body_mb:g} MB bodies: RSS {base:.0f} MB"
                    f" -> peak {peak:.0f} MB (+{peak - base:.0f}); answers {counts}"
                )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
