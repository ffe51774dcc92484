"""Prompt-encode time on the event loop's thread after a policy build ran torch on another thread.

A policy reload builds the new runtime off the event loop; the build runs torch (loading the
embedding model, calibrating a threshold). Each thread that runs torch ops gets its own OpenMP
team, and while a second team's threads live, GNU OpenMP (PyTorch's CPU runtime) manages more
threads than there are CPUs on a small machine and stops spin-waiting between ops. This bench
encodes the same prompt on the main thread (the event loop's, in the gateway) in rounds:

    fresh        nothing else has run torch
    pool         after one encode on a thread-pool worker that stays alive (the old reload:
                 asyncio.to_thread on the gateway's loop, whose default executor lives on)
    own thread   after one encode on gateway.server.policy_store.in_own_thread (the reload now)

and prints the median ms per encode of each and the ratio to ``fresh``. With as many intra-op
threads as CPUs (torch's default) the ``pool`` state is the slow one; it lasts until the pool
thread ends, i.e. for the life of the gateway. Each state runs in its own subprocess, rounds
alternate.

    python bench/router_reload_threads.py [--rounds 3] [--encodes 100] [--layers 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATES = ("fresh", "pool", "own thread")
PROMPT = "Explain step by step how a transformer computes attention over a long context. " * 6


def measure(state: str, encodes: int, layers: int) -> float:
    sys.path.insert(0, str(ROOT))
    from gateway.router.embedding import MiniLMEncoder
    from gateway.server.policy_store import in_own_thread

    enc = MiniLMEncoder(layers=layers)
    enc.encode([PROMPT])  # load on the main thread, as the gateway's first build does
    if state == "pool":  # the gateway's loop and its default executor live on
        pool = ThreadPoolExecutor(1)
        pool.submit(enc.encode, [PROMPT]).result()
    elif state == "own thread":
        asyncio.run(in_own_thread(lambda: enc.encode([PROMPT]), "policy-build"))
    for _ in range(5):
        enc.encode([PROMPT])
    t0 = time.perf_counter()
    for _ in range(encodes):
        enc.encode([PROMPT])
    return (time.perf_counter() - t0) / encodes * 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--encodes", type=int, default=100)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--child", choices=STATES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.encodes, args.layers)))
        return 0
    ms: dict[str, list[float]] = {s: [] for s in STATES}
    for r in range(args.rounds):
        for state in STATES[r % len(STATES) :] + STATES[: r % len(STATES)]:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    state,
                    "--encodes",
                    str(args.encodes),
                    "--layers",
                    str(args.layers),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            ms[state].append(json.loads(out.stdout))
        print(
            f"round {r + 1}: " + ", ".join(f"{s} {v[-1]:.2f} ms" for s, v in ms.items()), flush=True
        )
    base = statistics.median(ms["fresh"])
    for state, values in ms.items():
        med = statistics.median(values)
        print(f"{state}: median {med:.2f} ms per encode, {med / base:.2f}x fresh")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
