"""Gateway overhead: direct calls vs our gateway vs LiteLLM's proxy, side by side in one run.

Every target answers from the same loopback mock upstream (bench/mock_upstream.py):

- direct:  wrk -> mock
- gateway: wrk -> ``gateway serve`` (one worker, core 0; auth keys, metrics and rules-based
           routing on: header, metadata, team and difficulty rules with the heuristic scorer,
           so every request is scored and routed; cache off) -> mock
- floor:   wrk -> a bare FastAPI + aiohttp pass-through (bench/passthrough_floor.py, core 0)
           -> mock: what the Python HTTP stack alone costs on this machine
- litellm: wrk -> LiteLLM's proxy (``litellm --config``, one worker, core 0, master key on)
           -> mock as an ``openai/`` model

wrk and the mock share core 1, so core 0 holds only the server under test (the others sit
idle while one is measured). Per target and round: throughput at ``--concurrency``
connections for ``--duration`` s, and latency at concurrency 1 (one keep-alive connection,
back-to-back requests) for ``--latency-duration`` s; the server's CPU time per request is
read from /proc, which stays meaningful when other work shares the machine. Rounds are
interleaved across targets and the medians reported. Prints a table and the ratios; writes
bench/results/gateway_bench.json and .md.

    python bench/gateway_bench.py [--rounds 3] [--duration 10] [--concurrency 64] [--stream]
                                  [--litellm-bin PATH | --no-litellm]

Needs ``wrk`` (apt-get install wrk) and, for the LiteLLM column, the ``litellm`` CLI of
``litellm[proxy]`` (it may live in its own virtual environment: ``--litellm-bin``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: sibling modules

from gateway_bench_targets import (  # noqa: E402
    NATIVE_POLICY,
    UPSTREAM_KEY,
    BenchError,
    Server,
    litellm_version,
    start_floor,
    start_gateway,
    start_litellm,
    start_mock,
)
from wrk_load import LoadError, Run, run_wrk, write_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SERVER_CORE = 0  # the process under test
LOAD_CORE = 1  # wrk and the mock upstream
GOAL_RPS = 2000.0
GOAL_ADDED_P50_MS = 1.0
MODES = ("throughput", "latency", "stream_throughput", "stream_latency")
PROTOCOL_ROWS = ("gateway-messages", "gateway-responses")  # compared with the chat row
BASELINE = "@baseline"  # the suffix of a target run from the --baseline tree

# A typical everyday chat request: a system prompt, a few turns, a metadata tag. The gateway
# scores it (heuristic), checks every rule and routes it to the self-hosted backend.
REQUEST = {
    "model": "auto",
    "messages": [
        {
            "role": "system",
            "content": "You are a concise assistant for an online bookshop. Answer in two sentences.",
        },
        {
            "role": "user",
            "content": "Do you ship to Canada, and how long does delivery usually take?",
        },
        {
            "role": "assistant",
            "content": "Yes, we ship to Canada. Delivery usually takes five to eight business days.",
        },
        {"role": "user", "content": "Great. Can I return a book if it arrives damaged?"},
    ],
    "max_tokens": 128,
    "temperature": 0.7,
    "metadata": {"data_classification": "public", "app": "bookshop-faq"},
}


# The same conversation in the two other protocols the gateway speaks (same routing work:
# the metadata rule, the heuristic score, the self-hosted backend).
MESSAGES_REQUEST = {
    "model": "auto",
    "system": REQUEST["messages"][0]["content"],
    "messages": REQUEST["messages"][1:],
    "max_tokens": 128,
    "temperature": 0.7,
    "metadata": REQUEST["metadata"],
}
RESPONSES_REQUEST = {
    "model": "auto",
    "instructions": REQUEST["messages"][0]["content"],
    "input": REQUEST["messages"][1:],
    "max_output_tokens": 128,
    "temperature": 0.7,
    "metadata": REQUEST["metadata"],
    "store": False,  # a stored answer is one more Redis/in-process write; not what is compared
}
BODIES = {"chat": REQUEST, "messages": MESSAGES_REQUEST, "responses": RESPONSES_REQUEST}
STREAM_END = {
    "chat": b"data: [DONE]",
    "messages": b"message_stop",
    "responses": b"response.completed",
}


def bodies(protocol: str, native: bool = False) -> tuple[bytes, bytes]:
    """(whole, streamed) request bodies for one protocol; ``native``: the same conversation
    tagged for the native backends' rule (NATIVE_POLICY)."""
    b = BODIES[protocol]
    if native:
        b = {**b, "metadata": {**b["metadata"], "app": f"native-{protocol}"}}
    return (
        json.dumps(b, separators=(",", ":")).encode(),
        json.dumps({**b, "stream": True}, separators=(",", ":")).encode(),
    )


@dataclass
class Target:
    server: Server
    runs: dict[str, list[Run]] = field(default_factory=lambda: {m: [] for m in MODES})

    def median(self, mode: str) -> dict[str, float] | None:
        runs = self.runs[mode]
        if not runs:
            return None
        keys = ("rps", "p50_ms", "p90_ms", "p99_ms", "cpu_us_per_req")
        out = {}
        for k in keys:
            vals = [getattr(r, k) for r in runs if getattr(r, k) is not None]
            out[k] = round(statistics.median(vals), 3) if vals else None
        return out


# ------------------------------------------------------------------ measuring


def check_answer(server: Server, body: bytes, stream: bool) -> dict[str, str]:
    """One request before the load: the answer must be a real completion; returns its headers."""
    req = urllib.request.Request(
        server.url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {server.key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            data = resp.read()
            headers = {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        raise BenchError(f"{server.name}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc
    proto = server.protocol
    if stream:
        if STREAM_END[proto] not in data[-4000:]:
            raise BenchError(f"{server.name}: not a complete {proto} stream: {data[-300:]!r}")
    else:
        obj = json.loads(data)
        ok = {
            "chat": lambda o: (
                o.get("object") == "chat.completion" and o["choices"][0]["message"]["content"]
            ),
            "messages": lambda o: o.get("type") == "message" and o["content"][0]["text"],
            "responses": lambda o: o.get("object") == "response" and o["output"][0]["content"],
        }[proto]
        if not ok(obj):
            raise BenchError(f"{server.name}: not a {proto} answer: {data[:300]!r}")
    return headers


def measure_round(
    t: Target, body: bytes, script_dir: Path, args: argparse.Namespace, stream: bool
) -> None:
    s = t.server
    check_answer(s, body, stream)
    script = write_script(script_dir / f"{s.name}{'-stream' if stream else ''}.lua", body, s.key)
    # Warm before every measured run, not only the first: pools and lazy imports the first time,
    # and afterwards whatever the previous target's run left behind (an A/A test of two identical
    # gateways showed the one measured first after `direct` 25% slower without this).
    run_wrk(s.url, script, args.concurrency, args.warmup, LOAD_CORE, None)
    prefix = "stream_" if stream else ""
    t.runs[prefix + "throughput"].append(
        run_wrk(s.url, script, args.concurrency, args.duration, LOAD_CORE, s.pid)
    )
    t.runs[prefix + "latency"].append(
        run_wrk(s.url, script, 1, args.latency_duration, LOAD_CORE, s.pid)
    )


def gateway_overhead_ms(gateway: Server) -> float | None:
    """Mean of the gateway's own overhead histogram (request time minus upstream time)."""
    url = gateway.url.split("/v1/")[0] + "/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    vals = {}
    for line in text.splitlines():
        if line.startswith(("gateway_overhead_seconds_sum", "gateway_overhead_seconds_count")):
            name, value = line.rsplit(" ", 1)
            vals[name.split("{")[0]] = float(value)
    n = vals.get("gateway_overhead_seconds_count")
    return round(vals["gateway_overhead_seconds_sum"] / n * 1000, 3) if n else None


# ------------------------------------------------------------------ report


def ratios(targets: dict[str, Target], stream: bool) -> dict[str, float]:
    p = "stream_" if stream else ""
    m = {name: (t.median(p + "throughput"), t.median(p + "latency")) for name, t in targets.items()}
    m = {k: v for k, v in m.items() if v[0] is not None}
    out: dict[str, float] = {}
    d_lat = m["direct"][1]["p50_ms"]
    for name in (
        "gateway",
        "gateway-messages",
        "gateway-responses",
        "gateway@baseline",
        "floor",
        "litellm",
        "gateway-messages-native",
        "gateway-responses-native",
        "gateway-messages-native@baseline",
        "gateway-responses-native@baseline",
    ):
        if name in m:
            out[f"{name}_added_p50_ms"] = round(m[name][1]["p50_ms"] - d_lat, 3)
    for proto in ("messages", "responses"):  # native pass-through vs the same caller translated
        name, tr = f"gateway-{proto}-native", f"gateway-{proto}"
        if name in m and tr in m:
            out[f"{name}_vs_translated_throughput_x"] = round(
                m[name][0]["rps"] / m[tr][0]["rps"], 2
            )
            if m[name][0]["cpu_us_per_req"] and m[tr][0]["cpu_us_per_req"]:
                out[f"{name}_vs_translated_cpu_per_req_x"] = round(
                    m[name][0]["cpu_us_per_req"] / m[tr][0]["cpu_us_per_req"], 2
                )
    for name in PROTOCOL_ROWS:  # the goal: within 25%
        if name in m and "gateway" in m:
            g, x = m["gateway"], m[name]
            out[f"{name}_vs_chat_throughput_x"] = round(x[0]["rps"] / g[0]["rps"], 2)
            if g[0]["cpu_us_per_req"] and x[0]["cpu_us_per_req"]:
                out[f"{name}_vs_chat_cpu_per_req_x"] = round(
                    x[0]["cpu_us_per_req"] / g[0]["cpu_us_per_req"], 2
                )
    if "gateway" in m and "litellm" in m:
        g, ll = m["gateway"], m["litellm"]
        out["gateway_vs_litellm_throughput_x"] = round(g[0]["rps"] / ll[0]["rps"], 2)
        out["litellm_vs_gateway_p50_latency_x"] = round(ll[1]["p50_ms"] / g[1]["p50_ms"], 2)
        out["litellm_vs_gateway_added_p50_x"] = round(
            out["litellm_added_p50_ms"] / max(out["gateway_added_p50_ms"], 1e-3), 1
        )
        if g[0]["cpu_us_per_req"] and ll[0]["cpu_us_per_req"]:
            out["litellm_vs_gateway_cpu_per_req_x"] = round(
                ll[0]["cpu_us_per_req"] / g[0]["cpu_us_per_req"], 1
            )
    for name in [n for n in m if n + BASELINE in m]:  # this tree against the baseline tree
        g, b = m[name], m[name + BASELINE]
        out[f"{name}_vs_baseline_throughput_x"] = round(g[0]["rps"] / b[0]["rps"], 2)
        if g[0]["cpu_us_per_req"] and b[0]["cpu_us_per_req"]:
            out[f"{name}_vs_baseline_cpu_per_req_x"] = round(
                g[0]["cpu_us_per_req"] / b[0]["cpu_us_per_req"], 2
            )
    if "gateway" in m and "floor" in m:
        out["gateway_vs_floor_throughput_x"] = round(
            m["gateway"][0]["rps"] / m["floor"][0]["rps"], 2
        )
    return out


def cpu_x(run: Run, other: Run, digits: int) -> float | None:
    """CPU per request of ``run`` over ``other``'s (None where either was not measured)."""
    if run.cpu_us_per_req and other.cpu_us_per_req:
        return round(run.cpu_us_per_req / other.cpu_us_per_req, digits)
    return None


def paired_rounds(targets: dict[str, Target], stream: bool) -> list[dict]:
    """Per round, each protocol row against the chat row of the same round (the medians hide
    how much the rounds of a shared, noisy machine disagree)."""
    p = "stream_" if stream else ""
    if "gateway" not in targets:
        return []
    g, d = targets["gateway"].runs, targets["direct"].runs
    out = []
    for r in range(len(g[p + "throughput"])):
        g_tp, g_lat, d_lat = g[p + "throughput"][r], g[p + "latency"][r], d[p + "latency"][r]
        for name in PROTOCOL_ROWS:
            if name not in targets or len(targets[name].runs[p + "throughput"]) <= r:
                continue
            x_tp, x_lat = (
                targets[name].runs[p + "throughput"][r],
                targets[name].runs[p + "latency"][r],
            )
            cpu = cpu_x(x_tp, g_tp, 2)
            out.append(
                {
                    "round": r + 1,
                    "target": name,
                    "throughput_x": round(x_tp.rps / g_tp.rps, 2),
                    "cpu_per_req_x": cpu,
                    "added_p50_ms": round(x_lat.p50_ms - d_lat.p50_ms, 3),
                    "chat_added_p50_ms": round(g_lat.p50_ms - d_lat.p50_ms, 3),
                    "chat_rps": g_tp.rps,
                    "rps": x_tp.rps,
                }
            )
    return out


def baseline_rounds(targets: dict[str, Target], stream: bool) -> list[dict]:
    """Per round, each target against its twin from the --baseline tree (same round, the order
    rotated each round): a before/after change shows in every round, not only in the medians."""
    p = "stream_" if stream else ""
    out = []
    for name in [n for n in targets if n + BASELINE in targets]:
        now, base = targets[name].runs, targets[name + BASELINE].runs
        for r, (x, b) in enumerate(zip(now[p + "throughput"], base[p + "throughput"], strict=True)):
            cpu = cpu_x(x, b, 3)
            out.append(
                {
                    "round": r + 1,
                    "target": name,
                    "rps": x.rps,
                    "baseline_rps": b.rps,
                    "throughput_x": round(x.rps / b.rps, 3),
                    "cpu_us_per_req": x.cpu_us_per_req,
                    "baseline_cpu_us_per_req": b.cpu_us_per_req,
                    "cpu_per_req_x": cpu,
                    "p50_ms_c1": now[p + "latency"][r].p50_ms,
                    "baseline_p50_ms_c1": base[p + "latency"][r].p50_ms,
                }
            )
    return out


def baseline_table(rows: list[dict]) -> str:
    lines = [
        "| round | target | req/s | baseline req/s | req/s x baseline | CPU µs/req | baseline CPU µs/req | CPU/req x baseline | p50 ms (c=1) | baseline p50 ms (c=1) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu, bcpu, cx = (
            "-" if v is None else f"{v:{f}}"
            for v, f in (
                (r["cpu_us_per_req"], ".0f"),
                (r["baseline_cpu_us_per_req"], ".0f"),
                (r["cpu_per_req_x"], ".3f"),
            )
        )
        lines.append(
            f"| {r['round']} | {r['target']} | {r['rps']:,.0f} | {r['baseline_rps']:,.0f} | "
            f"{r['throughput_x']:.3f} | {cpu} | {bcpu} | {cx} | {r['p50_ms_c1']:.3f} | "
            f"{r['baseline_p50_ms_c1']:.3f} |"
        )
    return "\n".join(lines)


def paired_table(rows: list[dict]) -> str:
    lines = [
        "| round | target | req/s | chat req/s | req/s x chat | CPU/req x chat | added p50 ms | chat added p50 ms |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu = "-" if r["cpu_per_req_x"] is None else f"{r['cpu_per_req_x']:.2f}"
        lines.append(
            f"| {r['round']} | {r['target']} | {r['rps']:,.0f} | {r['chat_rps']:,.0f} | "
            f"{r['throughput_x']:.2f} | {cpu} | {r['added_p50_ms']:.3f} | {r['chat_added_p50_ms']:.3f} |"
        )
    return "\n".join(lines)


def table(targets: dict[str, Target], stream: bool, c: int) -> str:
    p = "stream_" if stream else ""
    rows = [
        f"| target | req/s (c={c}) | CPU µs/req | p50 ms (c={c}) | p99 ms (c={c}) | p50 ms (c=1) | p99 ms (c=1) | added p50 ms (c=1) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = targets["direct"].median(p + "latency")["p50_ms"]
    for name, t in targets.items():
        tp, lat = t.median(p + "throughput"), t.median(p + "latency")
        if tp is None:
            continue
        cpu = "-" if tp["cpu_us_per_req"] is None else f"{tp['cpu_us_per_req']:.0f}"
        added = "-" if name == "direct" else f"{lat['p50_ms'] - base:.3f}"
        rows.append(
            f"| {name} | {tp['rps']:,.0f} | {cpu} | {tp['p50_ms']:.2f} | {tp['p99_ms']:.2f} | "
            f"{lat['p50_ms']:.3f} | {lat['p99_ms']:.3f} | {added} |"
        )
    return "\n".join(rows)


def markdown(result: dict, targets: dict[str, Target], args: argparse.Namespace) -> str:
    c = args.concurrency
    lines = [
        "# Gateway benchmark",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {result['machine']}; load average at start {result['loadavg_start']}. Server under test pinned to "
        f"core {SERVER_CORE}; wrk and the mock upstream on core {LOAD_CORE}. Medians of {args.rounds} interleaved "
        f"rounds; each: {c} connections for {args.duration} s, then one keep-alive connection for "
        f"{args.latency_duration} s. Gateway: one worker; auth, metrics and rules routing (heuristic difficulty "
        "scorer) on; cache off. CPU µs/req: the server process's CPU time over requests served (unaffected by "
        "other work on the machine; 1e6 / it is the throughput one dedicated core would give).",
        "",
        "## Non-streaming",
        "",
        table(targets, False, c),
        "",
        "Ratios: " + ", ".join(f"{k} = {v}" for k, v in result["ratios"].items()),
    ]
    if result.get("paired_rounds"):
        lines += ["", "Per round, paired with the chat row of the same round:", ""]
        lines.append(paired_table(result["paired_rounds"]))
    if result.get("baseline_rounds"):
        lines += ["", "Per round, paired with the --baseline tree's twin of the same round:", ""]
        lines.append(baseline_table(result["baseline_rounds"]))
    if result.get("gateway_self_reported_overhead_ms") is not None:
        lines += [
            "",
            f"Gateway's own overhead histogram (mean over all requests of the run): "
            f"{result['gateway_self_reported_overhead_ms']} ms.",
        ]
    if args.stream:
        lines += [
            "",
            f"## Streaming (SSE, {args.chunks} content chunks)",
            "",
            table(targets, True, c),
            "",
            "Ratios: " + ", ".join(f"{k} = {v}" for k, v in result["stream_ratios"].items()),
        ]
        if result.get("stream_paired_rounds"):
            lines += ["", "Per round, paired with the chat row of the same round:", ""]
            lines.append(paired_table(result["stream_paired_rounds"]))
        if result.get("stream_baseline_rounds"):
            lines += [
                "",
                "Per round, paired with the --baseline tree's twin of the same round:",
                "",
            ]
            lines.append(baseline_table(result["stream_baseline_rounds"]))
    if result.get("litellm_error"):
        lines += ["", f"LiteLLM was not measured: {result['litellm_error']}"]
    r = result["ratios"]
    if "gateway-messages_vs_chat_throughput_x" in r:
        lines += [
            "",
            "Protocols (gateway-messages: Anthropic Messages at /v1/messages; gateway-responses: "
            "OpenAI Responses at /v1/responses; the same gateway process, the same conversation, "
            "translated to chat for the same mock). Goal: each within 25% of the chat row: "
            + ", ".join(
                f"{n} {r[f'{n}_vs_chat_throughput_x']}x req/s, "
                f"{r.get(f'{n}_vs_chat_cpu_per_req_x', '-')}x CPU/req, "
                f"added p50 {r[f'{n}_added_p50_ms']} vs {r['gateway_added_p50_ms']} ms"
                for n in ("gateway-messages", "gateway-responses")
            )
            + ".",
        ]
    if "gateway-messages-native_vs_translated_throughput_x" in r:
        lines += [
            "",
            "Native pass-through (gateway-*-native: a second gateway process, same policy plus an "
            "Anthropic and a Responses backend that take those callers' bodies untranslated; the "
            "mock answers in each protocol), vs the same caller translated to chat: "
            + ", ".join(
                f"{n} {r[f'{n}-native_vs_translated_throughput_x']}x req/s, "
                f"{r.get(f'{n}-native_vs_translated_cpu_per_req_x', '-')}x CPU/req, "
                f"added p50 {r[f'{n}-native_added_p50_ms']} vs {r[f'{n}_added_p50_ms']} ms"
                for n in ("gateway-messages", "gateway-responses")
            )
            + ".",
        ]
    g = result["goal"]
    lines += [
        "",
        f"Goal (>= {GOAL_RPS:,.0f} req/s on one core, < {GOAL_ADDED_P50_MS} ms added p50 at c=1): "
        f"measured {g['gateway_rps']:,.0f} req/s ({'met' if g['rps_ok'] else 'NOT met'}; CPU-implied "
        f"{g['cpu_implied_rps']:,.0f} req/s), added p50 {g['added_p50_ms']} ms "
        f"({'met' if g['p50_ok'] else 'NOT met'}).",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds over all targets (medians reported)",
    )
    p.add_argument(
        "--duration", type=int, default=10, help="seconds of throughput load per target and round"
    )
    p.add_argument(
        "--latency-duration",
        type=int,
        default=5,
        help="seconds of concurrency-1 load per target and round",
    )
    p.add_argument(
        "--warmup", type=int, default=2, help="seconds of unmeasured load before each measured run"
    )
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--stream", action="store_true", help="also measure streamed answers")
    p.add_argument("--chunks", type=int, default=8, help="content chunks per streamed answer")
    p.add_argument("--no-litellm", action="store_true", help="skip LiteLLM's proxy")
    p.add_argument("--no-floor", action="store_true", help="skip the bare FastAPI pass-through")
    p.add_argument(
        "--no-protocols",
        action="store_true",
        help="skip the Anthropic Messages and OpenAI Responses rows (same gateway process)",
    )
    p.add_argument(
        "--native",
        action="store_true",
        help="also the native pass-through rows (a second gateway whose Anthropic and Responses "
        "backends take those callers' bodies untranslated; the mock answers in both protocols)",
    )
    p.add_argument(
        "--litellm-bin",
        default=os.environ.get("LITELLM_BIN") or shutil.which("litellm") or "litellm",
        help="the litellm CLI of litellm[proxy] (default: $LITELLM_BIN, else litellm on PATH)",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        help="another source tree (e.g. `git worktree add /tmp/base HEAD~1`): "
        "its gateway (with --native, its native gateway too) runs as extra targets, for "
        "before/after numbers in one run, paired per round",
    )
    p.add_argument(
        "--out", default=str(RESULTS / "gateway_bench"), help="results path without extension"
    )
    args = p.parse_args(argv)
    for name, hi in (
        ("rounds", 20),
        ("duration", 300),
        ("latency_duration", 300),
        ("warmup", 60),
        ("chunks", 1000),
    ):
        if not 1 <= getattr(args, name) <= hi:
            p.error(f"--{name.replace('_', '-')} must be in [1, {hi}]")
    if args.baseline is not None and not (args.baseline / "gateway" / "cli.py").is_file():
        p.error(f"--baseline {args.baseline} is not a source tree with gateway/cli.py")
    if not 1 <= args.concurrency <= 1024:
        p.error("--concurrency must be in [1, 1024]")
    if shutil.which("wrk") is None:
        p.error("wrk is not installed (apt-get install -y wrk)")
    if not {SERVER_CORE, LOAD_CORE} <= os.sched_getaffinity(0):
        p.error(
            f"needs CPU cores {SERVER_CORE} and {LOAD_CORE} (server under test on one, wrk and the mock on the other)"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    body, _ = bodies("chat")
    result: dict = {
        "command": "python bench/gateway_bench.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "request": REQUEST,
        "requests_other_protocols": {"messages": MESSAGES_REQUEST, "responses": RESPONSES_REQUEST},
    }
    targets: dict[str, Target] = {}
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        upstream = start_mock(stack, work, LOAD_CORE, args.chunks)
        targets["direct"] = Target(
            Server("direct", upstream + "/chat/completions", UPSTREAM_KEY, None)
        )
        gw, policy = start_gateway(stack, work, SERVER_CORE, upstream)
        targets["gateway"] = Target(gw)
        result["gateway_policy"] = policy.read_text()
        headers = check_answer(gw, body, stream=False)
        result["gateway_route"] = {
            k: headers.get(k) for k in ("x-gateway-backend", "x-gateway-route-reason")
        }
        if not args.no_protocols:  # the same gateway process, other endpoints
            base_url = gw.url.removesuffix("/chat/completions")
            for proto, path in (("messages", "/messages"), ("responses", "/responses")):
                s = Server(f"gateway-{proto}", base_url + path, gw.key, gw.pid, protocol=proto)
                check_answer(s, bodies(proto)[0], stream=False)
                targets[s.name] = Target(s)
        # its own process (NATIVE_POLICY), pinned like the other gateways; with --baseline, the
        # baseline tree's too, for before/after numbers of the native pass-through in one run
        trees = [(ROOT, "")] + ([(args.baseline, BASELINE)] if args.baseline else [])
        for tree, suffix in trees if args.native else []:
            nat, _ = start_gateway(
                stack,
                work,
                SERVER_CORE,
                upstream,
                tree=tree,
                name=f"gateway-native{suffix}",
                policy_text=NATIVE_POLICY,
            )
            base_url = nat.url.removesuffix("/chat/completions")
            for proto, path in (("messages", "/messages"), ("responses", "/responses")):
                name = f"gateway-{proto}-native{suffix}"
                s = Server(name, base_url + path, nat.key, nat.pid, True, proto, True)
                headers = check_answer(s, bodies(proto, native=True)[0], stream=False)
                if headers.get("x-gateway-native") is None:
                    raise BenchError(f"{s.name}: answered translated, not natively: {headers}")
                targets[s.name] = Target(s)
        if args.baseline:
            base, _ = start_gateway(
                stack, work, SERVER_CORE, upstream, tree=args.baseline, name="gateway" + BASELINE
            )
            check_answer(base, body, stream=False)
            targets[base.name] = Target(base)
        if not args.no_floor:
            targets["floor"] = Target(start_floor(stack, work, SERVER_CORE, upstream))
        if not args.no_litellm:
            try:
                targets["litellm"] = Target(
                    start_litellm(stack, work, SERVER_CORE, upstream, args.litellm_bin)
                )
                result["litellm_version"] = litellm_version(args.litellm_bin)
            except BenchError as exc:
                result["litellm_error"] = str(exc)
                print(f"LiteLLM proxy not measured: {exc}", file=sys.stderr)

        for rnd in range(args.rounds):
            for stream in (False, True) if args.stream else (False,):
                names = list(targets)
                k = rnd % len(names)
                for name in (
                    names[k:] + names[:k]
                ):  # rotate the order each round: no target always goes first
                    t = targets[name]
                    if stream and not t.server.streams:
                        continue
                    print(
                        f"round {rnd + 1}/{args.rounds}: {name}{' stream' if stream else ''}",
                        flush=True,
                    )
                    try:
                        whole, streamed = bodies(t.server.protocol, t.server.native)
                        measure_round(t, streamed if stream else whole, work, args, stream)
                    except (BenchError, LoadError) as exc:
                        if name != "litellm":
                            raise
                        result["litellm_error"] = str(exc)  # keep the rest of the run
                        print(f"LiteLLM proxy dropped: {exc}", file=sys.stderr)
                        del targets[name]
        result["gateway_self_reported_overhead_ms"] = gateway_overhead_ms(gw)

    result["targets"] = {
        n: {
            "runs": {m: [asdict(r) for r in rs] for m, rs in t.runs.items() if rs},
            "median": {m: t.median(m) for m in MODES if t.runs[m]},
        }
        for n, t in targets.items()
    }
    result["ratios"] = ratios(targets, stream=False)
    result["paired_rounds"] = paired_rounds(targets, stream=False)
    result["baseline_rounds"] = baseline_rounds(targets, stream=False)
    if args.stream:
        result["stream_ratios"] = ratios(targets, stream=True)
        result["stream_paired_rounds"] = paired_rounds(targets, stream=True)
        result["stream_baseline_rounds"] = baseline_rounds(targets, stream=True)
    gtp = targets["gateway"].median("throughput")
    added = result["ratios"]["gateway_added_p50_ms"]
    cpu = gtp["cpu_us_per_req"]
    result["goal"] = {
        "gateway_rps": gtp["rps"],
        "rps_ok": gtp["rps"] >= GOAL_RPS,
        "cpu_implied_rps": round(1e6 / cpu) if cpu else 0,
        "added_p50_ms": added,
        "p50_ok": added < GOAL_ADDED_P50_MS,
    }

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result, targets, args)
    out.with_suffix(".md").write_text(md)
    print()
    print(md)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except (BenchError, LoadError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
