"""CPU throughput: our server (real HTTP, concurrent clients) vs transformers ``generate``.

Same run, same random-weight checkpoint (a few tens of millions of parameters), same 32 requests
with mixed prompt lengths (16-512) and exact output lengths (16-256, ignore_eos / no eos), greedy.
Transformers gets a fair best effort: requests are sorted by output length then prompt length,
batched with left padding, and several batch sizes are tried; the best one is the peer. Both
sides run in the same dtype: fp32 (the engine's CPU default) and bf16 (AMX / AVX512-BF16 CPUs).

Shared machines stall whole processes for hundreds of milliseconds at a time and drift in speed
between minutes, so each side runs ``--rounds`` times with the order rotated; the headline ratio
is the median over rounds of (transformers' best wall / ours) within the same round, and every
round is kept in the JSON. Prints output tokens/s and the ratio per dtype; writes
bench/results/engine_cpu.json.

The real-model peer of issue 13 (the demo GGUF, SmolLM2-135M-Instruct, against llama.cpp's
``llama-server -np 32``) is ``bench/engine_gguf_bench.py``, which has that workload; this script
stays on the random-weight checkpoint against transformers.

``--weight-dtype int4`` (or bfloat16/int8) serves ours with quantized linear weights (random
weights rounded to 4 bits: a speed check, not a parity one); transformers keeps ``--dtypes``'.

    python bench/engine_cpu_bench.py [--dtypes float32,bfloat16] [--rounds 3] [--stream] [--weight-dtype W]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "engine_cpu.json"
# ~30M parameters: 8 layers x ~2.9M + embeddings (tied)
MODEL_SIZE = dict(
    hidden_size=512,
    intermediate_size=1408,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=2,
    vocab_size=8192,
    max_position_embeddings=2048,
)


@dataclass
class Req:
    prompt: list[int]
    max_tokens: int


def make_requests(n: int, vocab: int, seed: int) -> list[Req]:
    rng = random.Random(seed)
    low = 10  # clear of the special tokens; below 500 = inside the demo tokenizer
    return [
        Req(
            [rng.randrange(low, min(vocab, 500)) for _ in range(rng.randint(16, 512))],
            rng.randint(16, 256),
        )
        for _ in range(n)
    ]


def build_model(out: Path) -> Path:
    from local_engine.demo_model import build_tiny_checkpoint

    return Path(build_tiny_checkpoint(out, arch="qwen2", **MODEL_SIZE))


def count_params(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in model_dir.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for name in st.keys():  # noqa: SIM118 - safe_open is not iterable
                total += math.prod(st.get_slice(name).get_shape())
    return total


# ours
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    model_dir: Path,
    port: int,
    args: argparse.Namespace,
    device: str = "cpu",
    dtype: str = "float32",
) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "local_engine.cli",
        "serve",
        "--model",
        str(model_dir),
        "--port",
        str(port),
        "--device",
        device,
        "--dtype",
        dtype,
        "--served-model-name",
        "bench",
        "--max-num-seqs",
        str(args.max_num_seqs),
        "--max-num-batched-tokens",
        str(args.max_num_batched_tokens),
        "--weight-dtype",
        args.weight_dtype,
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("server did not become healthy")


async def _one(client: httpx.AsyncClient, req: Req, stream: bool) -> int:
    body = {
        "model": "bench",
        "prompt": req.prompt,
        "max_tokens": req.max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }
    if not stream:
        r = await client.post("/v1/completions", json=body)
        r.raise_for_status()
        return r.json()["usage"]["completion_tokens"]
    body["stream_options"] = {"include_usage": True}
    tokens = 0
    async with client.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    tokens = usage["completion_tokens"]
    return tokens


async def run_ours(port: int, reqs: list[Req], stream: bool) -> tuple[float, int]:
    limits = httpx.Limits(max_connections=len(reqs) + 4)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=3600, limits=limits
    ) as c:
        await _one(c, Req(reqs[0].prompt[:16], 4), stream)  # warm-up
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(_one(c, r, stream) for r in reqs))
        wall = time.perf_counter() - t0
    expected = [r.max_tokens for r in reqs]
    if list(counts) != expected:
        raise RuntimeError(f"server returned wrong token counts: {counts} != {expected}")
    return wall, sum(counts)


# transformers
def load_transformers(model_dir: Path, dtype: str):  # noqa: ANN201 - transformers is a bench-only import
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype)).eval()
    with torch.inference_mode():
        model.generate(torch.tensor([[11] * 16]), max_new_tokens=2, do_sample=False)  # warm-up
    return model


def run_transformers(model, reqs: list[Req], batch_size: int) -> tuple[float, int]:  # noqa: ANN001
    import torch

    order = sorted(reqs, key=lambda r: (r.max_tokens, len(r.prompt)))
    pad = 0
    with torch.inference_mode():
        t0 = time.perf_counter()
        useful = 0
        for i in range(0, len(order), batch_size):
            group = order[i : i + batch_size]
            width = max(len(r.prompt) for r in group)
            ids = torch.tensor([[pad] * (width - len(r.prompt)) + r.prompt for r in group])
            mask = torch.tensor(
                [[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in group]
            )
            new = max(r.max_tokens for r in group)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=pad,
            )
            assert out.shape[1] == width + new  # bench sanity, not user input
            useful += sum(r.max_tokens for r in group)
        wall = time.perf_counter() - t0
    return wall, useful


def bench_dtype(model_dir: Path, reqs: list[Req], dtype: str, args: argparse.Namespace) -> dict:
    """Rounds of ours and transformers (each batch size), order rotated; the best round of each counts."""
    batch_sizes = [int(b) for b in args.hf_batch_sizes.split(",")]
    port = _free_port()
    proc = start_server(model_dir, port, args, dtype=dtype)
    model = load_transformers(model_dir, dtype)
    targets = ["ours"] + [f"hf{b}" for b in batch_sizes]
    walls: dict[str, list[float]] = {t: [] for t in targets}
    try:
        for rnd in range(args.rounds):
            for t in targets[rnd % len(targets) :] + targets[: rnd % len(targets)]:
                if t == "ours":
                    wall, tokens = asyncio.run(run_ours(port, reqs, args.stream))
                else:
                    wall, tokens = run_transformers(model, reqs, int(t[2:]))
                walls[t].append(wall)
                print(
                    f"  [{dtype} round {rnd + 1}] {t}: {tokens} tokens in {wall:.2f}s = {tokens / wall:.1f} tok/s",
                    flush=True,
                )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    tokens = sum(r.max_tokens for r in reqs)
    ours_tps = tokens / min(walls["ours"])
    hf = {
        str(b): {
            "wall_s": min(walls[f"hf{b}"]),
            "rounds_wall_s": walls[f"hf{b}"],
            "tok_per_s": tokens / min(walls[f"hf{b}"]),
        }
        for b in batch_sizes
    }
    best_bs = max(hf, key=lambda b: hf[b]["tok_per_s"])
    ratio = ours_tps / hf[best_bs]["tok_per_s"]
    # the same round's runs ran minutes apart at most: their ratio is the one that survives a
    # machine whose speed drifts between rounds; the median of those is the headline
    paired = [
        min(walls[f"hf{b}"][i] for b in batch_sizes) / walls["ours"][i] for i in range(args.rounds)
    ]
    print(
        f"{dtype}: ours {ours_tps:.1f} tok/s, transformers {hf[best_bs]['tok_per_s']:.1f} tok/s "
        f"(batch {best_bs}); best-of-rounds ratio {ratio:.2f}x, per-round ratios "
        f"{', '.join(f'{r:.2f}x' for r in paired)} (median {statistics.median(paired):.2f}x; goal >= 3x)",
        flush=True,
    )
    return {
        "ours": {
            "wall_s": min(walls["ours"]),
            "rounds_wall_s": walls["ours"],
            "tokens": tokens,
            "tok_per_s": ours_tps,
            "max_num_seqs": args.max_num_seqs,
            "max_num_batched_tokens": args.max_num_batched_tokens,
            "weight_dtype": args.weight_dtype,
        },
        "transformers": hf,
        "transformers_best_batch": int(best_bs),
        "best_of_rounds_ratio": ratio,
        "per_round_ratios": paired,
        "ratio": statistics.median(paired),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--stream", action="store_true", help="streaming clients (default: non-streaming)"
    )
    parser.add_argument(
        "--dtypes", default="float32,bfloat16", help="comma list; both sides run each"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of each side per dtype (order rotated)"
    )
    parser.add_argument("--hf-batch-sizes", default="8,32")
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048)
    parser.add_argument(
        "--weight-dtype",
        default="auto",
        help="ours only: local-engine serve --weight-dtype (auto/bfloat16/int8/int4); "
        "transformers keeps --dtypes' weights",
    )
    parser.add_argument("--model-dir", type=Path, default=None, help="reuse a checkpoint dir")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or build_model(Path(tmp) / "bench-model")
        vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
        reqs = make_requests(args.requests, vocab, args.seed)
        runs = {
            dtype: bench_dtype(model_dir, reqs, dtype, args) for dtype in args.dtypes.split(",")
        }
        params = count_params(model_dir)
    for dtype, run in runs.items():
        print(f"ratio {dtype} (median of per-round ratios): {run['ratio']:.2f}x")
    result = {
        "bench": "engine_cpu",
        "requests": args.requests,
        "seed": args.seed,
        "stream": args.stream,
        "rounds": args.rounds,
        "prompt_tokens": sum(len(r.prompt) for r in reqs),
        "model": {**MODEL_SIZE, "params": params, "weights": "random"},
        "prompt_len_range": [16, 512],
        "output_len_range": [16, 256],
        "runs": runs,
        "goal": 3.0,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu": _cpu_name(),
            "amx_bf16": "amx_bf16" in _cpu_flags(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _cpuinfo_field(name: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _cpu_name() -> str:
    return _cpuinfo_field("model name") or platform.processor()


def _cpu_flags() -> set[str]:
    return set(_cpuinfo_field("flags").split())


if __name__ == "__main__":
    sys.exit(main())
