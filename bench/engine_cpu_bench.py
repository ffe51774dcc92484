"""CPU throughput: our server (real HTTP, concurrent clients) vs transformers ``generate``.

Same run, same random-weight checkpoint (a few tens of millions of parameters), same 32 requests
with mixed prompt lengths (16-512) and exact output lengths (16-256, ignore_eos / no eos), greedy.
Transformers gets a fair best effort: requests are sorted by output length then prompt length,
batched with left padding, and several batch sizes are tried; the best one is the peer.
Prints output tokens/s of each and the ratio; writes bench/results/engine_cpu.json.

    python bench/engine_cpu_bench.py [--requests 32] [--stream] [--hf-batch-sizes 8,16,32]
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
MODEL_SIZE = dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=2, vocab_size=8192,
                  max_position_embeddings=2048)


@dataclass
class Req:
    prompt: list[int]
    max_tokens: int


def make_requests(n: int, vocab: int, seed: int) -> list[Req]:
    rng = random.Random(seed)
    low = 10  # clear of the special tokens; below 500 = inside the demo tokenizer
    return [Req([rng.randrange(low, min(vocab, 500)) for _ in range(rng.randint(16, 512))], rng.randint(16, 256))
            for _ in range(n)]


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


def start_server(model_dir: Path, port: int, args: argparse.Namespace, device: str = "cpu",
                 dtype: str = "float32") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "local_engine.cli", "serve", "--model", str(model_dir),
           "--port", str(port), "--device", device, "--dtype", dtype,
           "--served-model-name", "bench", "--max-num-seqs", str(args.max_num_seqs),
           "--max-num-batched-tokens", str(args.max_num_batched_tokens), "--log-level", "warning"]
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
    body = {"model": "bench", "prompt": req.prompt, "max_tokens": req.max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": stream}
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
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=3600, limits=limits) as c:
        await _one(c, Req(reqs[0].prompt[:16], 4), stream)  # warm-up
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(_one(c, r, stream) for r in reqs))
        wall = time.perf_counter() - t0
    expected = [r.max_tokens for r in reqs]
    if list(counts) != expected:
        raise RuntimeError(f"server returned wrong token counts: {counts} != {expected}")
    return wall, sum(counts)


# transformers
def run_transformers(model_dir: Path, reqs: list[Req], batch_size: int) -> tuple[float, int]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    order = sorted(reqs, key=lambda r: (r.max_tokens, len(r.prompt)))
    pad = 0
    with torch.inference_mode():
        model.generate(torch.tensor([order[0].prompt[:16]]), max_new_tokens=2, do_sample=False)  # warm-up
        t0 = time.perf_counter()
        useful = 0
        for i in range(0, len(order), batch_size):
            group = order[i:i + batch_size]
            width = max(len(r.prompt) for r in group)
            ids = torch.tensor([[pad] * (width - len(r.prompt)) + r.prompt for r in group])
            mask = torch.tensor([[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in group])
            new = max(r.max_tokens for r in group)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                                 min_new_tokens=new, do_sample=False, pad_token_id=pad)
            assert out.shape[1] == width + new  # bench sanity, not user input
            useful += sum(r.max_tokens for r in group)
        wall = time.perf_counter() - t0
    return wall, useful


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stream", action="store_true", help="streaming clients (default: non-streaming)")
    parser.add_argument("--hf-batch-sizes", default="8,32")
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048)
    parser.add_argument("--model-dir", type=Path, default=None, help="reuse a checkpoint dir")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or build_model(Path(tmp) / "bench-model")
        vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
        reqs = make_requests(args.requests, vocab, args.seed)
        port = _free_port()
        proc = start_server(model_dir, port, args)
        try:
            ours_wall, ours_tokens = asyncio.run(run_ours(port, reqs, args.stream))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        ours_tps = ours_tokens / ours_wall
        print(f"ours: {ours_tokens} tokens in {ours_wall:.2f}s = {ours_tps:.1f} tok/s", flush=True)

        hf = {}
        for bs in (int(b) for b in args.hf_batch_sizes.split(",")):
            wall, tokens = run_transformers(model_dir, reqs, bs)
            hf[bs] = {"wall_s": wall, "tokens": tokens, "tok_per_s": tokens / wall}
            print(f"transformers generate batch={bs}: {tokens} tokens in {wall:.2f}s = {tokens / wall:.1f} tok/s", flush=True)
        best_bs = max(hf, key=lambda b: hf[b]["tok_per_s"])
        ratio = ours_tps / hf[best_bs]["tok_per_s"]
        print(f"ratio ours / transformers(best batch={best_bs}) = {ratio:.2f}x (goal >= 3x)")

        import torch

        result = {
            "bench": "engine_cpu", "requests": args.requests, "seed": args.seed, "stream": args.stream,
            "model": {**MODEL_SIZE, "params": count_params(model_dir), "weights": "random"},
            "prompt_len_range": [16, 512], "output_len_range": [16, 256],
            "ours": {"wall_s": ours_wall, "tokens": ours_tokens, "tok_per_s": ours_tps,
                     "max_num_seqs": args.max_num_seqs, "max_num_batched_tokens": args.max_num_batched_tokens},
            "transformers": {str(b): v for b, v in hf.items()}, "transformers_best_batch": best_bs,
            "ratio": ratio, "goal": 3.0,
            "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "python": platform.python_version(), "torch": torch.__version__},
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
