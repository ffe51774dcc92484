"""Instructions per request through the gateway, by protocol: a paired measure that machine
noise cannot move.

req/s and CPU µs on a shared machine move with whatever else runs (rounds of
bench/gateway_bench.py disagree by 2x there). This counts the CPU instructions the gateway
process executes per request, under valgrind's callgrind: the same gateway process (one
worker, the bench policy: auth, metrics, rules routing with the heuristic scorer) answers the
bench's conversation as chat completions, Anthropic Messages and OpenAI Responses, streamed
or not, from the bench's mock upstream. Counting starts after a warm-up and is reset around
each measured batch, so start-up and imports are not in it. What it leaves out: the kernel
(socket writes), and time lost to caches and memory, which instructions do not show; the
wall-clock bench is still the measure of record, this one says whether a change moved the
code's own cost.

    python bench/gateway_instructions.py [--requests 50] [--rounds 2] [--chunks 8] [--tree DIR]

Needs ``valgrind`` (apt-get install valgrind). Writes bench/results/gateway_instructions.json
and .md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: sibling modules

from gateway_bench import bodies  # noqa: E402
from gateway_bench_targets import (  # noqa: E402
    CLIENT_KEY,
    HOST,
    POLICY,
    BenchError,
    free_port,
    gateway_argv,
    gateway_env,
    process,
    start_mock,
    wait_ready,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}
WARMUP = 30  # requests per protocol and mode before counting starts


def _instructions(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise BenchError(f"no instruction total in {dump}")


class Counted:
    """The gateway under callgrind, instrumentation off until ``count`` asks for it."""

    def __init__(self, stack: ExitStack, work: Path, upstream: str, tree: Path) -> None:
        policy = work / "policy.yaml"
        policy.write_text(POLICY.format(upstream=upstream))
        port = free_port()
        self.dumps = work / "callgrind"
        self.dumps.mkdir()
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={self.dumps}/cg.%p",
            *gateway_argv(policy, port),
        ]
        log = work / "gateway.log"
        self.proc = stack.enter_context(process(cmd, log, gateway_env(tree), cwd=tree))
        wait_ready(f"http://{HOST}:{port}/health", self.proc, log, timeout_s=900)
        self.conn = http.client.HTTPConnection(HOST, port, timeout=600)
        self.on = False

    def send(self, proto: str, stream: bool) -> None:
        self.conn.request(
            "POST",
            PATHS[proto],
            body=bodies(proto)[1 if stream else 0],
            headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"},
        )
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise BenchError(f"{proto}: HTTP {resp.status}: {data[:300]!r}")

    def _control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.proc.pid)], check=True, capture_output=True
        )

    def count(self, proto: str, stream: bool, n: int) -> float:
        """Instructions per request over ``n`` requests."""
        if not self.on:
            self._control("-i", "on")
            self.on = True
        self._control("-z")
        for _ in range(n):
            self.send(proto, stream)
        before = set(self.dumps.iterdir())
        self._control("-d")
        new = sorted(set(self.dumps.iterdir()) - before, key=lambda p: p.stat().st_mtime)
        if not new:
            raise BenchError("callgrind wrote no dump")
        total = _instructions(new[-1])
        for p in new:
            p.unlink()
        return total / n


def markdown(result: dict) -> str:
    lines = [
        "# Gateway instructions per request, by protocol",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Date: {result['started_at']}. Machine: {result['machine']}. The gateway process under "
        "valgrind callgrind (one worker, the gateway bench's policy and conversation, its mock "
        f"upstream with {result['chunks']} content chunks per stream); counted over "
        f"{result['requests']} requests per protocol and mode after a warm-up, "
        f"{result['rounds']} rounds; user-space instructions only (no kernel, no cache misses).",
        "",
        "| mode | protocol | k instructions/request (per round) | x chat |",
        "|---|---|---|---:|",
    ]
    for mode, rows in result["modes"].items():
        for proto, r in rows.items():
            per_round = ", ".join(f"{v / 1e3:,.1f}" for v in r["per_round"])
            lines.append(f"| {mode} | {proto} | {per_round} | {r['vs_chat_x']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=50, help="counted requests per measurement")
    p.add_argument("--rounds", type=int, default=2, help="measurements per protocol and mode")
    p.add_argument("--chunks", type=int, default=8, help="content chunks per streamed answer")
    p.add_argument(
        "--tree",
        type=Path,
        default=ROOT,
        help="the source tree whose gateway runs (e.g. `git worktree add /tmp/base HEAD~1`)",
    )
    p.add_argument("--out", default=str(RESULTS / "gateway_instructions"))
    args = p.parse_args(argv)
    if not 1 <= args.requests <= 10_000 or not 1 <= args.rounds <= 20:
        p.error("--requests must be in [1, 10000] and --rounds in [1, 20]")
    if not (args.tree / "gateway" / "cli.py").is_file():
        p.error(f"--tree {args.tree} is not a source tree with gateway/cli.py")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        p.error("valgrind is not installed (apt-get install -y valgrind)")
    cores = sorted(os.sched_getaffinity(0))
    result: dict = {
        "command": "python bench/gateway_instructions.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "requests": args.requests,
        "rounds": args.rounds,
        "chunks": args.chunks,
        "tree": str(args.tree),
        "modes": {},
    }
    with tempfile.TemporaryDirectory(prefix="gateway-instr-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        upstream = start_mock(stack, work, cores[-1], args.chunks)
        gw = Counted(stack, work, upstream, args.tree.resolve())
        for stream in (False, True):
            for proto in PATHS:
                for _ in range(WARMUP):
                    gw.send(proto, stream)
        for stream in (False, True):
            mode = "streamed" if stream else "whole"
            counts: dict[str, list[float]] = {proto: [] for proto in PATHS}
            for rnd in range(args.rounds):
                for proto in PATHS:
                    counts[proto].append(gw.count(proto, stream, args.requests))
                    print(
                        f"round {rnd + 1}: {mode} {proto}: "
                        f"{counts[proto][-1] / 1e3:,.1f} k instructions/request",
                        flush=True,
                    )
            chat = min(counts["chat"])
            result["modes"][mode] = {
                proto: {
                    "per_round": [round(v) for v in vals],
                    "min": round(min(vals)),
                    "vs_chat_x": round(min(vals) / chat, 3),
                }
                for proto, vals in counts.items()
            }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    out.with_suffix(".md").write_text(md)
    print()
    print(md)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
