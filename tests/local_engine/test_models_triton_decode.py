"""The CUDA decode kernel (Triton), checked on CPU with Triton's interpreter.

The kernel must give the same attention as the SDPA path: directly on random paged caches
(with and without a sliding window), and through the runner (greedy tokens and logprobs equal
to the SDPA path). Runs in a subprocess because TRITON_INTERPRET is read when Triton loads.
Skipped where Triton is not installed (it ships with CUDA builds of torch).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("triton")

CHECK = textwrap.dedent("""
    import sys
    import torch
    import torch.nn.functional as F
    from pathlib import Path
    from local_engine.config import EngineConfig
    from local_engine.engine.model_runner import ModelRunner
    from local_engine.engine.sequence import Sequence
    from local_engine.layers.triton_decode import paged_decode
    from local_engine.checkpoint import HFCheckpoint
    from local_engine.sampling_params import SamplingParams

    torch.set_num_threads(1)
    torch.manual_seed(0)
    # kernel vs SDPA on a random paged cache
    B, H, HKV, D, BS, NB = 3, 4, 2, 16, 4, 6
    kc, vc = torch.randn(20, BS, HKV, D), torch.randn(20, BS, HKV, D)
    bt = torch.stack([torch.randperm(20)[:NB] for _ in range(B)])
    ctx = torch.tensor([1, 9, 23], dtype=torch.int32)
    q = torch.randn(B, H, D)
    for window in (None, 5):
        out = paged_decode(q, kc, vc, bt, ctx, window)
        for i in range(B):
            n = int(ctx[i]); lo = 0 if window is None else max(0, n - window)
            k = kc[bt[i]].reshape(-1, HKV, D)[lo:n].transpose(0, 1)[None]
            v = vc[bt[i]].reshape(-1, HKV, D)[lo:n].transpose(0, 1)[None]
            ref = F.scaled_dot_product_attention(q[i][None, :, None], k, v, enable_gqa=True)[0, :, 0]
            torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)

    # through the runner: same greedy tokens and logprobs as the SDPA path
    def run(model_dir, kernel):
        cfg = EngineConfig(model=str(model_dir), device="cpu", dtype="float32", block_size=4, num_kv_blocks=64)
        runner = ModelRunner(cfg, HFCheckpoint(model_dir))
        runner.set_decode_kernel(paged_decode if kernel else None)
        params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True, logprobs=True)
        seqs = [Sequence(p, params, 4) for p in ([5, 6, 7, 8, 9, 10, 11], [300, 301], [42] * 13)]
        for i, s in enumerate(seqs):
            s.block_table = list(range(i * 8, i * 8 + 8))
        toks, lps = [[] for _ in seqs], [[] for _ in seqs]
        for _ in range(params.max_tokens):
            counts = [s.num_tokens - s.num_computed_tokens for s in seqs]
            for s, n, o, t, lp in zip(seqs, counts, runner.execute(seqs, counts), toks, lps):
                s.num_computed_tokens += n
                s.append_token(o.token_id); t.append(o.token_id); lp.append(o.logprob)
        return toks, torch.tensor(lps)

    for model_dir in sys.argv[1:]:
        (t_sdpa, lp_sdpa), (t_kernel, lp_kernel) = run(Path(model_dir), False), run(Path(model_dir), True)
        assert t_sdpa == t_kernel, (model_dir, t_sdpa, t_kernel)
        torch.testing.assert_close(lp_kernel, lp_sdpa, atol=1e-4, rtol=0)
    print("ok")
""")


@pytest.mark.slow  # the interpreter runs every kernel program in numpy: ~10 s alone, more on a busy box
def test_triton_decode_kernel_matches_sdpa(tiny_checkpoint: Callable[..., Path]) -> None:
    dirs = [
        str(tiny_checkpoint("mistral"))
    ]  # GQA, and a sliding window (12) shorter than the sequences
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, *dirs],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
