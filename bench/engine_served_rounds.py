"""Rounds of the GGUF bench's workload against one of our servers alone (no llama.cpp peer).

For before/after checks of an engine change where building llama-server is not worth it: the
same 32 chats x 128 tokens, the same server command and client as bench/engine_gguf_bench.py,
served from the checkout this script lives in. Run it from two checkouts one after the other
(or with different ``SPEC`` flags) and compare tok/s; for the ratio to llama.cpp use the GGUF
bench itself.

    python bench/engine_served_rounds.py [--rounds 3] [--requests 32] [--max-tokens 128] \\
        [--threads 2] [SPEC]        # SPEC as the GGUF bench's --engine: 'NAME=[VAR=V ...] [FLAGS]'
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_gguf_bench as gguf  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", nargs="?", default="ours=", type=gguf.parse_spec)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from local_engine.demo_gguf import demo_model_path

    name, spec = args.spec
    side = gguf.ours_side(name, spec, demo_model_path(), args.threads)
    with tempfile.TemporaryDirectory() as logdir:
        side.start(Path(logdir))
        try:
            for r in range(args.rounds):
                wall, cpu, tokens, _ = asyncio.run(
                    gguf.run(
                        side.port, side.proc.pid, gguf.questions(args.requests), args.max_tokens
                    )
                )
                if any(t != args.max_tokens for t in tokens):
                    raise SystemExit(f"round {r + 1}: completion tokens {sorted(set(tokens))}")
                print(
                    f"{name} round {r + 1}: {sum(tokens)} tokens in {wall:.2f}s = "
                    f"{sum(tokens) / wall:.1f} tok/s; {cpu:.1f} CPU s",
                    flush=True,
                )
        finally:
            side.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
