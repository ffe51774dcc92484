"""Bounded soak: clients through the gateway to the local engine (demo model), under faults.

N client tasks send streaming and non-streaming chat requests through the gateway for M
seconds; some disconnect early (mid-stream, or before a non-streamed answer), some repeat a
greedy prompt (Redis cache hits), a few send the engine a poisoned request directly (top_k 2**63:
it once killed the step loop; now a 400). Meanwhile the script kills and restarts its own Redis
and restarts the engine (SIGTERM, then SIGKILL). Every answer is checked: a 200 must be a whole
completion (a stream ends with [DONE]), an error must be OpenAI's JSON. An error is "lost to a
fault" when the request overlapped an engine restart (the only backend was down: nothing else
can serve it); any other error is unexpected. RSS and open fds of the gateway and the engine
are sampled from /proc and compared after warm-up.

    nice python bench/soak.py --duration 180 --clients 8 --out bench/results/soak.json

Everything runs on loopback: a redis-server on a free port (not the shared 6379), the engine
and the gateway as subprocesses, the demo model written to a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
KEY = "soak-client-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ERROR_BACKOFF_S = 0.5
WARMUP_S = 30.0  # a (re)started process: load, first requests, allocator growth
ENGINE_GRACE_S = 6.0  # after an engine restart: the gateway's breaker cooldown (2 s) and probes
FAULTS = ("redis", "engine-term", "engine-kill")
KINDS = ("chat", "stream", "stream-disconnect", "disconnect", "cached", "poison")
WEIGHTS = (35, 30, 10, 10, 13, 2)
PROMPTS = ["Name a colour.", "Say hi.", "Count to three.", "What is 2+2?"]

POLICY = """
version: 1
auth:
  keys: [{{name: soak, key: os.environ/SOAK_KEY, team: soak, rpm: 1000000}}]
teams:
  soak: {{rpm: 1000000}}
cache: {{enabled: true, redis_url: "redis://127.0.0.1:{redis}/0", ttl_s: 120, namespace: soak}}
backends:
  local:
    kind: openai_compatible
    base_url: "http://127.0.0.1:{engine}/v1"
    model: default
    self_hosted: true
    pricing: {{gpu_usd_per_hour: 2.5, tokens_per_second: 1500}}
    capabilities: {{context_window: 256, tools: true}}
    timeout_s: 30
    circuit_breaker: {{failure_threshold: 3, cooldown_s: 2}}
models:
  auto: {{route: local}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Child:
    """A process this script started (and may restart), with its log file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log = (log_dir / f"{name}.log").open("ab")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv, stdout=self.log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def sample(self) -> tuple[int, float, int] | None:
        """(pid, RSS in MB, open fds), or None when it is not running."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        pid = self.proc.pid
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss_kb = int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])
            return pid, rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration, ValueError):
            return None


def wait_ready(check: Any, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.TransportError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up in {timeout:g} s")


def engine_up(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200


def redis_up(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


@dataclass
class Result:
    kind: str
    start: float
    end: float
    outcome: str  # ok, disconnect, rejected (poison -> 400), error
    detail: str = ""


@dataclass
class Windows:
    spans: list[tuple[str, float, float]] = field(default_factory=list)

    def hit(self, r: Result, kind_prefix: str, grace: float) -> bool:
        return any(
            name.startswith(kind_prefix) and r.start <= end + grace and r.end >= start
            for name, start, end in self.spans
        )


def openai_error(r: httpx.Response) -> str:
    try:
        err = r.json()["error"]
        assert {"message", "type", "param", "code"} <= set(err)
    except (ValueError, KeyError, TypeError, AssertionError):
        return f"{r.status_code} NOT OpenAI-shaped: {r.text[:120]!r}"
    return f"{r.status_code} {err.get('code')}"


async def one(http: httpx.AsyncClient, engine_url: str, kind: str, rng: random.Random) -> Result:
    t0 = time.monotonic()
    body: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": rng.choice(PROMPTS) + f" #{rng.random():.6f}"}],
        "max_tokens": rng.randint(4, 32),
    }
    outcome, detail = "ok", ""
    try:
        if kind == "cached":
            body = {**body, "messages": [{"role": "user", "content": rng.choice(PROMPTS)}]}
            body.update(temperature=0, max_tokens=8)
        if kind == "poison":
            r = await http.post(
                f"{engine_url}/v1/completions",
                json={"model": "default", "prompt": "x", "top_k": 2**63, "max_tokens": 2},
            )
            outcome = "rejected" if r.status_code == 400 else "error"
            detail = openai_error(r)
        elif kind in ("stream", "stream-disconnect"):
            async with http.stream(
                "POST", "/v1/chat/completions", json={**body, "stream": True}
            ) as r:
                if r.status_code != 200:
                    await r.aread()
                    outcome, detail = "error", openai_error(r)
                else:
                    last = ""
                    async for line in r.aiter_lines():
                        if line.startswith("data:"):
                            last = line
                            if kind == "stream-disconnect":
                                outcome = "disconnect"
                                break
                    if outcome == "ok" and last != "data: [DONE]":
                        outcome, detail = "error", f"stream ended with {last[:120]!r}"
        elif kind == "disconnect":
            try:
                r = await http.post(
                    "/v1/chat/completions", json=body, timeout=rng.uniform(0.02, 0.3)
                )
                outcome = "ok" if r.status_code == 200 else "error"
                detail = "" if r.status_code == 200 else openai_error(r)
            except httpx.TimeoutException:
                outcome = "disconnect"
        else:
            r = await http.post("/v1/chat/completions", json=body)
            if r.status_code != 200:
                outcome, detail = "error", openai_error(r)
            elif not r.json()["choices"][0]["message"]:
                outcome, detail = "error", "200 without a message"
    except httpx.HTTPError as exc:
        outcome, detail = "error", f"transport: {type(exc).__name__}"
    return Result(kind, t0, time.monotonic(), outcome, detail)


async def client(
    base: str, engine_url: str, deadline: float, seed: int, results: list[Result]
) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as http:
        while time.monotonic() < deadline:
            kind = rng.choices(KINDS, WEIGHTS)[0]
            result = await one(http, engine_url, kind, rng)
            results.append(result)
            if result.outcome == "error":
                await asyncio.sleep(ERROR_BACKOFF_S)  # as an SDK would, instead of spinning


async def sampler(children: dict[str, Child], deadline: float, out: list[dict]) -> None:
    while time.monotonic() < deadline:
        for name, child in children.items():
            s = child.sample()
            if s is not None:
                out.append(
                    {"t": time.monotonic(), "proc": name, "pid": s[0], "rss_mb": s[1], "fds": s[2]}
                )
        await asyncio.sleep(2)


async def faults(
    plan: list[tuple[float, str]], redis: Child, engine: Child, ports: dict, windows: Windows
) -> None:
    t_start = time.monotonic()
    for at, fault in plan:
        await asyncio.sleep(max(0.0, t_start + at - time.monotonic()))
        t0 = time.monotonic()
        if fault == "redis":
            redis.stop(signal.SIGKILL)
            await asyncio.sleep(3)
            redis.start()
            await asyncio.to_thread(wait_ready, lambda: redis_up(ports["redis"]), "redis")
        else:
            engine.stop(signal.SIGTERM if fault == "engine-term" else signal.SIGKILL)
            engine.start()
            await asyncio.to_thread(wait_ready, lambda: engine_up(ports["engine"]), "engine")
        windows.spans.append((fault, t0, time.monotonic()))
        print(f"  fault {fault}: {time.monotonic() - t0:.1f} s until back", flush=True)


def flatness(samples: list[dict], proc: str, warm_until: float) -> list[dict]:
    """Per process instance (pid): RSS and fds just after warm-up (a global one, and for a
    restarted process WARMUP_S after its first sample) vs at the end."""
    out = []
    for pid in dict.fromkeys(s["pid"] for s in samples if s["proc"] == proc):
        first = min(s["t"] for s in samples if s["pid"] == pid)
        since = max(warm_until, first + WARMUP_S)
        series = [s for s in samples if s["pid"] == pid and s["t"] >= since]
        if len(series) < 4:
            continue
        head, tail = series[: len(series) // 4 or 1], series[-(len(series) // 4 or 1) :]
        out.append(
            {
                "pid": pid,
                "samples": len(series),
                "rss_mb_after_warmup": round(statistics.median(s["rss_mb"] for s in head), 1),
                "rss_mb_end": round(statistics.median(s["rss_mb"] for s in tail), 1),
                "rss_mb_max": round(max(s["rss_mb"] for s in series), 1),
                "fds_after_warmup": max(s["fds"] for s in head),
                "fds_end": max(s["fds"] for s in tail),
            }
        )
    return out


def run(duration: float, clients: int, fault_names: list[str], seed: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    ports = {"redis": free_port(), "engine": free_port(), "gateway": free_port()}
    env = {**os.environ, "SOAK_KEY": KEY, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    py = sys.executable
    subprocess.run(
        [py, "-m", "local_engine.cli", "make-demo-model", str(tmp / "model")],
        check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    (tmp / "policy.yaml").write_text(POLICY.format(redis=ports["redis"], engine=ports["engine"]))
    redis = Child(
        "redis",
        ["redis-server", "--port", str(ports["redis"]), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        tmp, env,
    )  # fmt: skip
    engine = Child(
        "engine",
        [py, "-m", "local_engine.cli", "serve", "--model", str(tmp / "model"), "--device", "cpu",
         "--port", str(ports["engine"]), "--max-model-len", "256", "--num-kv-blocks", "128",
         "--max-num-seqs", "16", "--graceful-shutdown-timeout", "3", "--log-level", "warning"],
        tmp, env,
    )  # fmt: skip
    gateway = Child(
        "gateway",
        [py, "-m", "gateway.cli", "serve", str(tmp / "policy.yaml"), "--port",
         str(ports["gateway"]), "--log-level", "warning", "--watch-interval", "0"],
        tmp, env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{ports['gateway']}"
    engine_url = f"http://127.0.0.1:{ports['engine']}"
    children = {"gateway": gateway, "engine": engine, "redis": redis}
    try:
        redis.start()
        wait_ready(lambda: redis_up(ports["redis"]), "redis")
        engine.start()
        wait_ready(lambda: engine_up(ports["engine"]), "engine")
        gateway.start()
        wait_ready(lambda: httpx.get(f"{base}/health").status_code == 200, "gateway")
        plan = [
            (duration * (i + 1) / (len(fault_names) + 1), name)
            for i, name in enumerate(fault_names)
        ]
        results: list[Result] = []
        samples: list[dict] = []
        windows = Windows()
        t0 = time.monotonic()

        async def main() -> None:
            deadline = time.monotonic() + duration
            await asyncio.gather(
                *(client(base, engine_url, deadline, seed + i, results) for i in range(clients)),
                sampler(children, deadline, samples),
                faults(plan, redis, engine, ports, windows),
            )

        asyncio.run(main())
        wall = time.monotonic() - t0
        gateway_alive = gateway.proc is not None and gateway.proc.poll() is None
    finally:
        for child in (gateway, engine, redis):
            child.stop()
    return summarize(results, samples, windows, t0, duration, clients, wall, gateway_alive, tmp)


def window_of(windows: Windows, r: Result) -> str:
    return next(n for n, s, e in windows.spans if r.start <= e + ENGINE_GRACE_S and r.end >= s)


def summarize(
    results: list[Result],
    samples: list[dict],
    windows: Windows,
    t0: float,
    duration: float,
    clients: int,
    wall: float,
    gateway_alive: bool,
    tmp: Path,
) -> dict[str, Any]:
    lost: Counter[str] = Counter()
    unexpected: list[str] = []
    for r in results:
        if r.outcome != "error":
            continue
        if windows.hit(r, "engine", ENGINE_GRACE_S):
            lost[f"{window_of(windows, r)}: {r.detail}"] += 1
        else:
            unexpected.append(f"{r.kind} at +{r.start - t0:.1f}s: {r.detail}")
    per_fault = []
    for name, start, end in windows.spans:
        during = [r for r in results if r.start <= end + ENGINE_GRACE_S and r.end >= start]
        per_fault.append(
            {
                "fault": name,
                "at_s": round(start - t0, 1),
                "back_after_s": round(end - start, 1),
                "requests_overlapping": len(during),
                "errors": sum(r.outcome == "error" for r in during),
            }
        )
    warm_until = t0 + duration * 0.2
    outcomes = Counter(r.outcome for r in results)
    return {
        "command": "nice python bench/soak.py " + " ".join(sys.argv[1:]),
        "duration_s": round(wall, 1),
        "clients": clients,
        "requests": len(results),
        "by_kind": dict(Counter(r.kind for r in results)),
        "outcomes": dict(outcomes),
        "lost_to_engine_restarts": dict(lost),
        "unexpected_errors": len(unexpected),
        "unexpected_samples": unexpected[:20],
        "faults": per_fault,
        "gateway_alive_at_end": gateway_alive,
        "flatness": {p: flatness(samples, p, warm_until) for p in ("gateway", "engine")},
        "logs": str(tmp),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=180, help="seconds of traffic")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--faults", default=",".join(FAULTS), help=f"comma list of {FAULTS}, or ''")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the summary JSON here")
    args = p.parse_args(argv)
    names = [f for f in args.faults.split(",") if f]
    if unknown := set(names) - set(FAULTS):
        p.error(f"unknown faults {sorted(unknown)}")
    summary = run(args.duration, args.clients, names, args.seed)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    ok = summary["unexpected_errors"] == 0 and summary["gateway_alive_at_end"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
