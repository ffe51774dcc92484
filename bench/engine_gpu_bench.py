"""GPU benchmark (needs a CUDA device): Qwen2.5-0.5B / 7B shapes with RANDOM weights (bf16).

1. Batch-1 decode tokens/s of our engine, as a fraction of the HBM roofline
   (roofline tok/s = HBM bandwidth / bytes of weights read per token).
2. Output tokens/s at 64 and 256 concurrent requests: our server over real HTTP vs transformers
   ``generate`` (batched, left padding, sdpa, greedy, same output lengths) in the same run.
Writes bench/results/engine_gpu.json.

    python bench/engine_gpu_bench.py [--sizes 0.5b,7b] [--concurrency 64,256] [--hbm-gbps N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_cpu_bench import Req, _free_port, run_ours, start_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "engine_gpu.json"
SHAPES = {
    "0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
}
# HBM bandwidth by device name fragment, GB/s (vendor peak)
HBM_GBPS = {
    "H200": 4800,
    "H100 SXM": 3350,
    "H100 80GB HBM3": 3350,
    "H100 PCIe": 2000,
    "H100": 3350,
    "A100-SXM4-80GB": 2039,
    "A100": 1555,
}
PROMPT_LEN, OUTPUT_LEN = 256, 256


def hbm_gbps(override: float | None) -> float:
    import torch

    if override:
        return override
    name = torch.cuda.get_device_name()
    return next((bw for frag, bw in HBM_GBPS.items() if frag in name), 3350)


def build_checkpoint(size: str, out: Path) -> tuple[Path, int]:
    """Random bf16 Qwen2 weights with the real shapes, plus the demo tokenizer files."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from local_engine.demo_model import build_tiny_checkpoint

    tiny = Path(build_tiny_checkpoint(out / "tiny", arch="qwen2"))
    config = Qwen2Config(
        **SHAPES[size],
        max_position_embeddings=32768,
        rope_theta=1e6,
        rms_norm_eps=1e-6,
        torch_dtype="bfloat16",
        bos_token_id=None,
        eos_token_id=json.loads((tiny / "config.json").read_text()).get("eos_token_id"),
    )
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    path = out / size
    model.save_pretrained(str(path))
    del model
    torch.cuda.empty_cache()
    for f in tiny.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, path / f.name)
    return path, n_params


def batch1_decode(model_dir: Path, n_tokens: int = 257) -> float:
    import torch

    from local_engine.config import EngineConfig
    from local_engine.engine.llm_engine import LLMEngine
    from local_engine.sampling_params import SamplingParams

    engine = LLMEngine(EngineConfig(model=str(model_dir), device="cuda", dtype="bfloat16"))
    rng = random.Random(0)
    prompt = [rng.randrange(10, 500) for _ in range(PROMPT_LEN)]

    def timed(n: int) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        engine.generate([prompt], SamplingParams(temperature=0, max_tokens=n, ignore_eos=True))
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    timed(8)  # warm-up (graphs / compile)
    t1, tn = timed(1), timed(n_tokens)
    return (n_tokens - 1) / (tn - t1)


def transformers_throughput(model_dir: Path, reqs: list[Req], batch_size: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = (
        AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=torch.bfloat16, attn_implementation="sdpa"
        )
        .cuda()
        .eval()
    )
    with torch.inference_mode():
        model.generate(
            torch.tensor([reqs[0].prompt[:16]], device="cuda"), max_new_tokens=4, do_sample=False
        )
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, len(reqs), batch_size):
            ids = torch.tensor(
                [r.prompt for r in reqs[i : i + batch_size]], device="cuda"
            )  # same length: no pad
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=OUTPUT_LEN,
                min_new_tokens=OUTPUT_LEN,
                do_sample=False,
                pad_token_id=0,
            )
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    del model
    torch.cuda.empty_cache()
    return len(reqs) * OUTPUT_LEN / wall


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="0.5b,7b")
    parser.add_argument("--concurrency", default="64,256")
    parser.add_argument(
        "--hf-max-batch", type=int, default=64, help="transformers batch cap (memory)"
    )
    parser.add_argument("--hbm-gbps", type=float, default=None)
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark runs only on a GPU machine", file=sys.stderr)
        return 2
    bw = hbm_gbps(args.hbm_gbps)
    results: dict = {
        "bench": "engine_gpu",
        "device": torch.cuda.get_device_name(),
        "hbm_gbps": bw,
        "weights": "random",
        "prompt_len": PROMPT_LEN,
        "output_len": OUTPUT_LEN,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            model_dir, n_params = build_checkpoint(size, Path(tmp))
            tps = batch1_decode(model_dir)
            torch.cuda.empty_cache()
            roofline = bw * 1e9 / (n_params * 2)
            entry: dict = {
                "params": n_params,
                "batch1_decode_tok_s": tps,
                "roofline_tok_s": roofline,
                "fraction_of_roofline": tps / roofline,
                "throughput": {},
            }
            print(
                f"{size}: batch-1 decode {tps:.1f} tok/s = {tps / roofline:.1%} of HBM roofline "
                f"({roofline:.0f} tok/s)",
                flush=True,
            )
            for conc in (int(c) for c in args.concurrency.split(",")):
                rng = random.Random(conc)
                reqs = [
                    Req([rng.randrange(10, 500) for _ in range(PROMPT_LEN)], OUTPUT_LEN)
                    for _ in range(conc)
                ]
                port = _free_port()
                server_args = argparse.Namespace(
                    max_num_seqs=max(conc, 256), max_num_batched_tokens=8192
                )
                proc = start_server(model_dir, port, server_args, device="cuda", dtype="bfloat16")
                try:
                    wall, tokens = asyncio.run(run_ours(port, reqs, stream=True))
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
                row = {"ours_tok_s": tokens / wall}
                if not args.skip_transformers:
                    row["transformers_tok_s"] = transformers_throughput(
                        model_dir, reqs, min(conc, args.hf_max_batch)
                    )
                    row["ratio"] = row["ours_tok_s"] / row["transformers_tok_s"]
                entry["throughput"][str(conc)] = row
                print(f"{size} @ {conc} concurrent: {row}", flush=True)
            results["models"][size] = entry
            shutil.rmtree(model_dir)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
