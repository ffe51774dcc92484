"""Fleet balancing: round-robin vs least load vs least load + prefix affinity, one workload.

Four loopback replicas in their own process (tests/support/mock_engine.py: a queue of ``--slots`` running requests
per replica, latency that grows with the queue, and a prefix cache of ``--cache-blocks``
64-character blocks whose hits skip prefill, so a cache hit makes a request faster) sit behind
the real gateway (``gateway serve``, its own process) as one ``fleet:`` backend. The same multi-turn workload runs against each
balancing mode: ``--conversations`` chats, each with its own long system prompt, ``--turns``
turns each (a turn resends the whole conversation so far), ``--concurrency`` chats at a time.
Every mode gets fresh replicas (empty caches); rounds rotate the order of the modes.

Per mode: requests/s, p50/p99 latency (client side) and the replicas' prefix-cache hit rate
(cached blocks / prompt blocks, counted at the replicas). Medians over rounds, and each mode's
ratio to round-robin per round (median). Writes bench/results/fleet_bench.json and .md.

    python bench/fleet_bench.py [--rounds 3] [--conversations 48] [--turns 4]

Times are simulated with sleeps in the replicas (no model runs), so the numbers show what the
balancer does to queueing and cache reuse, not an engine's speed; the gateway's own CPU cost
is in them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.mock_engine import EngineModel, MockEngine  # noqa: E402

MODES = {
    "round_robin": {"balance": "round_robin"},
    "least_load": {"balance": "least_load", "prefix_affinity": {"enabled": False}},
    "least_load+affinity": {"balance": "least_load", "prefix_affinity": {"enabled": True}},
}
RESULTS = REPO / "bench" / "results"


def policy_text(endpoints: list[str], mode: dict, load_factor: float) -> str:
    fleet = {"endpoints": endpoints, "metrics_interval_s": 0.25, **mode}
    if fleet.get("prefix_affinity", {}).get("enabled"):
        fleet["prefix_affinity"] = {"enabled": True, "load_factor": load_factor}
    return json.dumps(
        {
            "backends": {
                "local": {
                    "kind": "openai_compatible",
                    "model": "default",
                    "self_hosted": True,
                    "timeout_s": 60,
                    "fleet": fleet,
                }
            },
            "models": {"auto": {"route": "local"}},
            "cache": {"enabled": False},
        }
    )


def system_prompt(i: int, chars: int) -> str:
    words = [f"rule{i}-{k} applies to case {k % 7};" for k in range(chars // 24 + 1)]
    return f"You are assistant {i}. " + " ".join(words)[:chars]


async def conversation(
    client: httpx.AsyncClient, url: str, i: int, args, latencies: list[float]
) -> None:
    messages = [{"role": "system", "content": system_prompt(i, args.system_chars)}]
    for t in range(args.turns):
        messages.append({"role": "user", "content": f"Question {t} about case {t % 7}?"})
        t0 = time.perf_counter()
        r = await client.post(
            url + "/v1/chat/completions",
            json={"model": "auto", "messages": messages, "max_tokens": args.max_tokens},
        )
        latencies.append(time.perf_counter() - t0)
        r.raise_for_status()
        messages.append(r.json()["choices"][0]["message"])


async def workload(url: str, args) -> tuple[float, list[float]]:
    latencies: list[float] = []
    sem = asyncio.Semaphore(args.concurrency)
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(i: int) -> None:
            async with sem:
                await conversation(client, url, i, args, latencies)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(args.conversations)))
        return time.perf_counter() - t0, latencies


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


@contextmanager
def replicas_process(args):
    """The replicas in their own process (they share no GIL with the gateway or the client)."""
    cmd = [sys.executable, __file__, "--serve-replicas", *_model_args(args)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        urls = json.loads(proc.stdout.readline())
        yield urls
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def _model_args(args) -> list[str]:
    return [
        f"--replicas={args.replicas}",
        f"--slots={args.slots}",
        f"--cache-blocks={args.cache_blocks}",
        f"--prefill-s-per-kchar={args.prefill_s_per_kchar}",
        f"--decode-s-per-token={args.decode_s_per_token}",
    ]


def serve_replicas(args) -> int:
    model = EngineModel(
        slots=args.slots,
        cache_blocks=args.cache_blocks,
        base_s=0.002,
        prefill_s_per_kchar=args.prefill_s_per_kchar,
        decode_s_per_token=args.decode_s_per_token,
    )
    engines = [MockEngine(model).start() for _ in range(args.replicas)]
    print(json.dumps([e.url for e in engines]), flush=True)
    sys.stdin.read()  # until the bench closes our stdin
    for e in engines:
        e.stop()
    return 0


def _replica_counts(urls: list[str]) -> tuple[float, float, list[int]]:
    queries = hits = 0.0
    served = []
    for u in urls:
        text = httpx.get(u.removesuffix("/v1") + "/metrics").text
        values = {ln.split("{")[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()}
        queries += values["local_engine_prefix_cache_queries_total"]
        hits += values["local_engine_prefix_cache_hits_total"]
        served.append(int(values["mock_engine_requests_total"]))
    return queries, hits, served


@contextmanager
def gateway_process(policy: Path):
    port = _free_port()
    cmd = [sys.executable, "-m", "gateway.cli", "serve", str(policy), f"--port={port}"]
    cmd += ["--watch-interval=0", "--log-level=warning"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/health", proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_mode(name: str, args, tmp: Path) -> dict:
    with replicas_process(args) as urls:
        path = tmp / f"{name}.yaml"
        path.write_text(policy_text(urls, MODES[name], args.load_factor))
        with gateway_process(path) as url:
            wall, lat = asyncio.run(workload(url, args))
        queries, hits, per_replica = _replica_counts(urls)
    return {
        "requests": len(lat),
        "wall_s": wall,
        "rps": len(lat) / wall,
        "p50_ms": pct(lat, 0.5) * 1000,
        "p99_ms": pct(lat, 0.99) * 1000,
        "prefix_hit_rate": hits / queries if queries else 0.0,
        "requests_per_replica": per_replica,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--slots", type=int, default=4, help="running requests per replica")
    ap.add_argument("--cache-blocks", type=int, default=400, help="prefix-cache blocks per replica")
    ap.add_argument("--prefill-s-per-kchar", type=float, default=0.4)
    ap.add_argument("--decode-s-per-token", type=float, default=0.01)
    ap.add_argument("--conversations", type=int, default=48)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--system-chars", type=int, default=2000)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--load-factor", type=float, default=1.25, help="prefix affinity's bound")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/")
    ap.add_argument("--serve-replicas", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_replicas:
        return serve_replicas(args)

    names = list(MODES)
    rounds: list[dict[str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            res = {n: run_mode(n, args, Path(tmp)) for n in order}
            rounds.append(res)
            print(
                f"round {r + 1}: "
                + "; ".join(
                    f"{n} {res[n]['rps']:.1f} req/s p99 {res[n]['p99_ms']:.0f} ms "
                    f"hit {res[n]['prefix_hit_rate']:.0%}"
                    for n in names
                ),
                flush=True,
            )

    def med(n: str, key: str) -> float:
        return statistics.median(rd[n][key] for rd in rounds)

    def ratio(n: str, key: str) -> float:
        return statistics.median(rd[n][key] / rd["round_robin"][key] for rd in rounds)

    summary = {
        n: {
            "rps": med(n, "rps"),
            "p50_ms": med(n, "p50_ms"),
            "p99_ms": med(n, "p99_ms"),
            "prefix_hit_rate": med(n, "prefix_hit_rate"),
            "rps_vs_round_robin": ratio(n, "rps"),
            "p99_vs_round_robin": ratio(n, "p99_ms"),
        }
        for n in names
    }
    header = (
        "| balancing | req/s | p50 ms | p99 ms | prefix-cache hit rate | req/s vs RR | p99 vs RR |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for n, s in summary.items():
        lines.append(
            f"| {n} | {s['rps']:.1f} | {s['p50_ms']:.0f} | {s['p99_ms']:.0f} | "
            f"{s['prefix_hit_rate']:.1%} | {s['rps_vs_round_robin']:.2f}x | "
            f"{s['p99_vs_round_robin']:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        cmd = "python bench/fleet_bench.py " + " ".join(sys.argv[1:])
        machine = f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
        (RESULTS / "fleet_bench.json").write_text(
            json.dumps(
                {
                    "command": cmd.strip(),
                    "machine": machine,
                    "args": vars(args),
                    "summary": summary,
                    "rounds": rounds,
                },
                indent=2,
            )
            + "\n"
        )
        (RESULTS / "fleet_bench.md").write_text(
            f"# Fleet balancing (`{cmd.strip()}`)\n\n{table}\n\n"
            f"{args.rounds} rounds, medians; ratios are per-round medians against round-robin. "
            f"Machine: {machine}.\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
