"""The learned router's torch threads per gateway worker: 1 vs torch's default, 1 and 2 workers.

Two measurements, each in paired rounds (every configuration once per round, the order
rotated), so a shared machine's load falls on all of them alike; ratios are taken within a
round and their median reported:

* scorer: W processes (W = workers) each score distinct prompts with LearnedScorer (cache
  misses only) back to back for --duration s, started together, with torch intra-op threads
  T. Per score: wall p50/p99 and CPU ms (the process's, all its threads).
* gateway: ``gateway serve --workers W --router-threads T`` with a learned-router policy in
  front of the loopback mock upstream (bench/mock_upstream.py), loaded by wrk at
  --concurrency connections for --duration s; every request has a prompt of its own (wrk's
  Lua ``request()`` numbers them), so each one is encoded. Throughput, request p50/p99 and the
  gateway's CPU time per request (supervisor and workers, from /proc).

    python bench/router_threads.py [--rounds 3] [--duration 8] [--concurrency 16]
                                   [--threads 1,2] [--workers 1,2] [--layers 0,6]
                                   [--only scorer|gateway]

``--layers 0`` is the shipped artefact (static token vectors); N > 0 a copy of it whose encoder
runs N MiniLM layers (the cost of such a router, not its scores).

torch's default intra-op count is the CPUs (2 on the machine of bench/results/router_threads.md),
so ``--threads 1,2`` there compares 1 with the default. Writes bench/results/router_threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: sibling modules

from gateway_bench_targets import (  # noqa: E402
    CLIENT_KEY,
    HOST,
    free_port,
    gateway_env,
    process,
    start_mock,
    wait_ready,
)
from wrk_load import cpu_seconds, wait_idle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CPUS = len(os.sched_getaffinity(0))
OUT = ROOT / "bench" / "results" / "router_threads.json"
PROMPT = (
    "Question {n}: compare two ways of sharding a key-value store across regions, and say "
    "which one keeps tail latency lower when one region is slow. Answer in five bullet points."
)

POLICY = """\
version: 1
cache: {{enabled: false}}
auth:
  keys:
    - {{name: bench, key: os.environ/GATEWAY_BENCH_KEY}}
backends:
  local: {{kind: openai_compatible, base_url: "{upstream}", model: mock-model, self_hosted: true}}
  big: {{kind: openai_compatible, base_url: "{upstream}", model: mock-frontier}}
models:
  auto:
    difficulty: {{scorer: learned, artifact: "{artifact}", threshold: 0.5}}
    rules:
      - {{name: hard, when: {{difficulty: hard}}, route: big}}
      - {{name: everyday, route: local}}
"""

WRK_SCRIPT = """\
counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
request = function()
  counter = counter + 1
  local prompt = string.format([==[{prompt}]==], counter)
  return wrk.format(nil, nil, nil, '{{"model":"auto","messages":[{{"role":"user","content":"' ..
    prompt .. '"}}]}}')
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_JSON {{"requests":%d,"duration_us":%d,"non2xx":%d,' ..
    '"socket_errors":%d,"p50_us":%d,"p99_us":%d}}\\n', summary.requests, summary.duration,
    e.status, e.connect + e.read + e.write + e.timeout, latency:percentile(50),
    latency:percentile(99)))
end
"""


def _label(layers: int, workers: int, threads: int) -> str:
    return f"L{layers}-w{workers}-t{threads}"


def artefact(layers: int, workdir: Path) -> str:
    """The shipped artefact, or a copy of it whose encoder runs ``layers`` MiniLM layers: what a
    router trained with ``--encoder-layers`` costs per prompt (its scores are not meaningful)."""
    if layers == 0:
        return "builtin"
    sys.path.insert(0, str(ROOT))
    from gateway.router.artifact import resolve

    doc = json.loads(resolve(None).read_text())
    doc["config"]["encoder_layers"] = layers
    out = workdir / f"router-{layers}-layers"
    out.mkdir(exist_ok=True)
    (out / "router.json").write_text(json.dumps(doc))
    return str(out)


# ---------------------------------------------------------------- scorer


def score_child(threads: int, art: str, start_at: float, duration: float, seed: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    from gateway.router.scorer import LearnedScorer

    torch.set_num_threads(threads)
    scorer = LearnedScorer.load(art)
    scorer.warm_up()
    for i in range(5):
        scorer.score([{"role": "user", "content": PROMPT.format(n=f"warm {seed} {i}")}])
    time.sleep(max(0.0, start_at - time.time()))
    wall, n = [], 0
    c0, end = time.process_time(), time.perf_counter() + duration
    while time.perf_counter() < end:
        n += 1
        t = time.perf_counter()
        scorer.score([{"role": "user", "content": PROMPT.format(n=f"{seed}-{n}")}])
        wall.append((time.perf_counter() - t) * 1000)
    return {"wall_ms": wall, "cpu_ms": (time.process_time() - c0) * 1000}


def run_scorer(workers: int, threads: int, art: str, duration: float) -> dict:
    start_at = time.time() + 6.0  # after every child has loaded the model
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                json.dumps([threads, art, start_at, duration, w]),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for w in range(workers)
    ]
    outs = [json.loads(p.communicate(timeout=duration + 120)[0]) for p in procs]
    wall = sorted(ms for o in outs for ms in o["wall_ms"])
    n = len(wall)
    return {
        "scores": n,
        "scores_per_s": round(n / duration, 1),
        "p50_ms": round(wall[n // 2], 2),
        "p99_ms": round(wall[min(n - 1, int(n * 0.99))], 2),
        "cpu_ms_per_score": round(sum(o["cpu_ms"] for o in outs) / n, 2),
    }


# ---------------------------------------------------------------- gateway


def run_gateway(
    workers: int, threads: int, art: str, duration: int, concurrency: int, workdir: Path,
    upstream: str,
) -> dict:  # fmt: skip
    policy = workdir / "policy.yaml"
    policy.write_text(POLICY.format(upstream=upstream, artifact=art))
    script = workdir / "load.lua"
    script.write_text(WRK_SCRIPT.format(key=CLIENT_KEY, prompt=PROMPT.replace("{n}", "%d")))
    port = free_port()
    argv = [
        sys.executable, "-m", "gateway.cli", "serve", "--policy", str(policy),
        "--host", HOST, "--port", str(port), "--workers", str(workers), "--log-level", "warning",
    ]  # fmt: skip
    env = gateway_env()
    argv += ["--router-threads", str(threads)]
    log = workdir / f"gateway-w{workers}-t{threads}.log"
    with ExitStack() as stack:
        proc = stack.enter_context(process(argv, log, env))
        wait_ready(f"http://{HOST}:{port}/health", proc, log)
        url = f"http://{HOST}:{port}/v1/chat/completions"
        warm = subprocess.run(  # every worker loads and warms its scorer on a few requests
            ["wrk", "-t1", f"-c{2 * workers}", "-d3s", "-s", str(script), url],
            capture_output=True,
            text=True,
            check=False,
        )
        if warm.returncode != 0:
            raise RuntimeError(f"warm-up failed: {warm.stderr}")
        wait_idle(proc.pid)
        cpu0 = cpu_seconds(proc.pid)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout=20s", "-s",
             str(script), url],
            capture_output=True, text=True, timeout=duration + 60, check=False,
        )  # fmt: skip
        cpu1 = cpu_seconds(proc.pid)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-400:]} {out.stderr[-400:]}")
    d = json.loads(line.removeprefix("BENCH_JSON "))
    if d["non2xx"] or d["socket_errors"]:
        raise RuntimeError(f"errors under load: {d}")
    if not d["requests"]:  # none answered within the run: recorded, not a crash
        return {"requests": 0, "rps": 0.0, "p50_ms": None, "p99_ms": None, "cpu_ms_per_req": None}
    return {
        "requests": d["requests"],
        "rps": round(d["requests"] / (d["duration_us"] / 1e6), 1),
        "p50_ms": d["p50_us"] / 1000,
        "p99_ms": d["p99_us"] / 1000,
        "cpu_ms_per_req": round((cpu1 - cpu0) * 1000 / d["requests"], 2),
    }


# ---------------------------------------------------------------- rounds


def _median(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def ratios(rounds: list[dict], a: str, b: str, keys: list[str]) -> dict[str, float | None]:
    """Median over rounds of ``a``'s value over ``b``'s in the same round, per key."""
    out: dict[str, float | None] = {}
    for k in keys:
        pairs = [(r[a][k], r[b][k]) for r in rounds if r[a][k] is not None and r[b][k]]
        out[k] = round(statistics.median(x / y for x, y in pairs), 3) if pairs else None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument(
        "--threads",
        default=f"1,{CPUS}",
        help="torch threads to compare (default: 1 and torch's own default, the CPUs)",
    )
    ap.add_argument("--workers", default="1,2")
    ap.add_argument(
        "--layers", default="0,6", help="encoder layers (0: the shipped artefact's static vectors)"
    )
    ap.add_argument("--only", choices=["scorer", "gateway"])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(score_child(*json.loads(args.child))))
        return 0
    configs = [
        (int(n), int(w), int(t))
        for n in args.layers.split(",")
        for w in args.workers.split(",")
        for t in args.threads.split(",")
    ]
    result: dict = {"cpus": CPUS, "args": vars(args) | {"out": None}}
    parts = [args.only] if args.only else ["scorer", "gateway"]
    with tempfile.TemporaryDirectory(prefix="router-threads-") as tmp, ExitStack() as stack:
        upstream = start_mock(stack, Path(tmp), 1, 4) if "gateway" in parts else ""
        for part in parts:
            rounds: list[dict] = []
            for r in range(args.rounds):
                row: dict = {}
                for n, w, t in configs[r % len(configs) :] + configs[: r % len(configs)]:
                    art, label = artefact(n, Path(tmp)), _label(n, w, t)
                    if part == "scorer":
                        row[label] = run_scorer(w, t, art, args.duration)
                    else:
                        row[label] = run_gateway(
                            w, t, art, args.duration, args.concurrency, Path(tmp), upstream
                        )
                    print(part, r + 1, label, row[label], flush=True)
                rounds.append(dict(sorted(row.items())))
            keys = ["p50_ms", "p99_ms", "cpu_ms_per_score", "scores_per_s"]
            if part == "gateway":
                keys = ["rps", "p50_ms", "p99_ms", "cpu_ms_per_req"]
            threads = [int(t) for t in args.threads.split(",")]
            paired = {  # e.g. "L6-w2: t1/t2"
                f"L{n}-w{w}: t{t}/t{threads[-1]}": ratios(
                    rounds, _label(n, w, t), _label(n, w, threads[-1]), keys
                )
                for n, w, t in configs
                if t != threads[-1]
            }
            result[part] = {
                "rounds": rounds,
                "median": {
                    label: {k: _median([r[label][k] for r in rounds]) for k in keys}
                    for label in rounds[0]
                },
                "paired_ratios": paired,
            }
            print(json.dumps({part: result[part]["median"]}, indent=1))
            print(json.dumps({part: paired}, indent=1))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
