"""Request-path cost of the learned router, and batch throughput of `router score`.

    python bench/router_latency.py [--data ../shared/data/routing] [--n 2000] [--batch 15000]

* per request, ONE CPU core (torch.set_num_threads(1)): p50/p99 of LearnedScorer.score on
  distinct realistic prompts (cache misses: the worst case), and on repeats (cache hits);
  the peer is the same prompts through sentence-transformers' all-MiniLM-L6-v2 encode
  (what the issue measured at ~28 ms), printed as a ratio;
* batch: RouterModel.predict over --batch prompts on 2 threads (the `router score` path).
Writes bench/results/router_latency.json. Budget: p99 <= 10 ms added per request.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.router.shared_data import sources  # noqa: E402
from gateway.runtime import build_scorer  # noqa: E402


def _pcts(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "max_ms": round(float(a.max()), 3),
        "n": len(ms),
    }


def _timed(fn, items, cpu: list[float] | None = None) -> list[float]:
    """Wall ms per call; with ``cpu``, also this thread's CPU ms (what the call itself costs,
    without the time other processes on a busy machine take the core away)."""
    out = []
    for x in items:
        c = time.thread_time()
        t = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t) * 1000)
        if cpu is not None:
            cpu.append((time.thread_time() - c) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "routing")
    ap.add_argument(
        "--n", type=int, default=2000, help="distinct prompts for the per-request timing"
    )
    ap.add_argument("--batch", type=int, default=15000, help="prompts for the batch throughput")
    ap.add_argument(
        "--peer-n", type=int, default=200, help="prompts for the sentence-transformers peer"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "router_latency.json")
    args = ap.parse_args()

    prompts = list(
        dict.fromkeys(p.messages[0]["content"] for s in sources(args.data) for p in s.prompts)
    )
    rng = np.random.default_rng(0)
    rng.shuffle(prompts)
    msgs = [[{"role": "user", "content": p}] for p in prompts]
    chars = np.array([len(p) for p in prompts])

    torch.set_num_threads(1)
    scorer = build_scorer("learned", None)  # what serve builds: the shipped router + fallback
    if scorer.primary is None:
        raise SystemExit(f"the shipped router does not load: {scorer.load_error}")
    scorer.score([{"role": "user", "content": "warm up"}])
    sample = [
        msgs[i % len(msgs)] + [{"role": "user", "content": f"#{i}"}] * (i >= len(msgs))
        for i in range(args.n)
    ]
    cpu: list[float] = []
    miss = _timed(scorer.score, sample, cpu)
    hit = _timed(scorer.score, sample[:500])
    result = {
        "machine": f"{platform.processor() or platform.machine()}, torch threads=1 for per-request",
        "prompt_chars": {"median": int(np.median(chars)), "p90": int(np.percentile(chars, 90))},
        "load_average_1m": round(os.getloadavg()[0], 2),
        "learned_cache_miss": _pcts(miss),
        "learned_cache_miss_cpu": _pcts(cpu),
        "learned_cache_hit": _pcts(hit),
        "failures": scorer.failures,
    }
    try:
        from sentence_transformers import SentenceTransformer

        from gateway.router.embedding import bundled_model_dir

        st = SentenceTransformer(str(bundled_model_dir()), device="cpu")
        st.encode(["warm up"])
        peer = _timed(lambda m: st.encode([m[0]["content"]]), sample[: args.peer_n])
        result["peer_sentence_transformers"] = _pcts(peer)
        result["ratio_p50_peer_over_ours"] = round(
            float(np.percentile(peer, 50) / np.percentile(miss, 50)), 1
        )
    except ImportError:
        result["peer_sentence_transformers"] = None

    torch.set_num_threads(2)
    batch = [msgs[i % len(msgs)] for i in range(args.batch)]
    t = time.perf_counter()
    scorer.primary.model.predict(batch)
    secs = time.perf_counter() - t
    result["batch"] = {
        "prompts": args.batch,
        "threads": 2,
        "seconds": round(secs, 2),
        "prompts_per_s": round(args.batch / secs, 1),
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    for key in ("learned_cache_miss", "learned_cache_miss_cpu"):
        m = result[key]
        verdict = "within" if m["p99_ms"] <= 10 else "OVER"
        print(
            f"{key}: p50 {m['p50_ms']} ms, p99 {m['p99_ms']} ms on one core: {verdict} the 10 ms budget"
        )
    print(f"(load average {result['load_average_1m']} on {os.cpu_count()} cores while measuring)")


if __name__ == "__main__":
    main()
