"""Model runner: loads the checkpoint, owns the KV cache, and runs one step of a mixed batch.

``execute`` takes the scheduler's choice (sequences and how many new tokens each computes),
builds the step's inputs once (``step_inputs.py``), runs the model over the flat token batch,
computes logits only for the rows that sample, and samples them all in one batched call.
CUDA-only work (profiling for cache size, the Triton decode kernel, CUDA graphs for decode)
sits behind device checks, so a CPU run never imports or touches it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from local_engine.config import EngineConfig
from local_engine.engine import kv_cache
from local_engine.engine.sequence import Sequence
from local_engine.engine.step_inputs import StepInputs, prepare_step
from local_engine.host_memory import tune_malloc
from local_engine.layers.attention import AttentionMetadata, PagedAttention
from local_engine.layers.quantization import (
    QuantizationError,
    cpu_has_native_bf16,
    quantize_model,
    resolve_weight_dtype,
)
from local_engine.layers.sampler import build_sampling_batch, compute_logprobs, sample
from local_engine.loader import eos_token_ids
from local_engine.models.decoder_args import ModelConfigError
from local_engine.models.registry import build_model, decoder_args
from local_engine.models.weights import Kept4Bit, load_weights

if TYPE_CHECKING:
    from local_engine.checkpoint import Checkpoint

__all__ = ["ModelRunner", "TokenSample", "resolve_device", "resolve_dtype"]

logger = logging.getLogger(__name__)

DTYPE_NAMES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@dataclass(slots=True)
class TokenSample:
    token_id: int
    logprob: float | None  # log_softmax of the raw logits; None unless requested
    top_logprobs: list[tuple[int, float]] | None


def _triton_decode() -> Callable[..., torch.Tensor] | None:
    """The Triton paged-decode kernel, or None when Triton is not installed (SDPA is used)."""
    try:
        from local_engine.layers.triton_decode import paged_decode
    except ImportError:
        logger.info("triton is not importable: decode attention uses SDPA and no CUDA graphs")
        return None
    return paged_decode


def _set_cpu_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)
    # the engine never forks inter-op work; one inter-op thread keeps a stray user of that
    # pool from competing with the intra-op threads (settable once per process, before use)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelConfigError("device 'cuda' was asked for but CUDA is not available")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in DTYPE_NAMES:
        raise ModelConfigError(f"dtype {name!r} is not one of auto, {', '.join(DTYPE_NAMES)}")
    return DTYPE_NAMES[name]


class ModelRunner:
    def __init__(self, config: EngineConfig, checkpoint: Checkpoint) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.block_size = config.block_size
        if self.device.type == "cpu":
            _set_cpu_threads(config.cpu_threads)
            if config.cpu_malloc_tuning:
                tune_malloc()
        hf_config = checkpoint.hf_config
        self.generation_config = checkpoint.generation_config
        self.eos_token_ids: set[int] = eos_token_ids(hf_config, self.generation_config)
        self.args = decoder_args(hf_config)
        self.vocab_size = self.args.vocab_size
        self.max_model_len = self._max_model_len(config)
        self.model = build_model(hf_config, self.max_model_len, self.dtype, self.device)
        self.num_params = sum(p.numel() for p in self.model.parameters())
        from local_engine.checkpoint import GGUFCheckpoint

        # the linears' swap (None: kept in self.dtype) and why, for the start-up log
        swap, self.weight_dtype_reason = resolve_weight_dtype(
            config.weight_dtype,
            gguf=isinstance(checkpoint, GGUFCheckpoint),
            device=self.device,
            dtype=self.dtype,
            native_bf16=self.device.type == "cpu" and cpu_has_native_bf16(),
        )
        kept: Kept4Bit | None = {} if swap == "int4" else None
        load_weights(
            self.model,
            checkpoint.tensors(keep_4bit=kept is not None),
            self.args.tie_word_embeddings,
            kept,
        )
        if swap is not None:
            try:
                quantize_model(self.model, swap, kept)
            except QuantizationError as exc:
                if config.weight_dtype != "auto":
                    raise
                # shapes are checked before anything is swapped: the model is untouched
                swap, self.weight_dtype_reason = None, f"auto: bfloat16 not usable ({exc})"
            del kept
        self.weight_swap = swap
        self.weight_dtype = swap or str(self.dtype).removeprefix("torch.")
        # quantized weights on CPU: K/V come out of a bfloat16 matmul and attention feeds one,
        # so a bfloat16 cache halves the per-step K/V gather and loses next to nothing
        self.kv_dtype = (
            torch.bfloat16 if self.device.type == "cpu" and swap is not None else self.dtype
        )
        per_block = kv_cache.block_bytes(self.args, self.block_size, self.kv_dtype)
        if self.device.type == "cuda":
            self._profile_forward()
            self.num_kv_blocks = kv_cache.cuda_num_blocks(config, per_block, self.device)
        else:
            self.num_kv_blocks = kv_cache.cpu_num_blocks(config, per_block)
        use_graphs = (
            self.device.type == "cuda" and not config.enforce_eager and _triton_decode() is not None
        )
        # CUDA graphs pad the batch; padded rows write into one spare block the scheduler never sees
        self.kv_cache = kv_cache.allocate(
            self.model,
            self.args,
            self.num_kv_blocks + int(use_graphs),
            self.block_size,
            self.kv_dtype,
            self.device,
        )
        if self.num_kv_blocks * self.block_size < self.max_model_len:
            logger.warning(
                "KV cache holds %d tokens; max_model_len lowered from %d",
                self.num_kv_blocks * self.block_size,
                self.max_model_len,
            )
            self.max_model_len = self.num_kv_blocks * self.block_size
        self._gen = torch.Generator(self.device).manual_seed(config.seed)  # unseeded requests
        self._seed_gen = torch.Generator(self.device)  # reseeded per seeded row
        self.decode_kernel: Callable[..., torch.Tensor] | None = None
        if self.device.type == "cuda":
            self.set_decode_kernel(_triton_decode())
        self.graphs = None
        if use_graphs:
            from local_engine.engine.cuda_graphs import DecodeGraphs  # CUDA only

            self.graphs = DecodeGraphs.capture(self, spare_block=self.num_kv_blocks)

    def describe(self) -> str:
        """One line for the start-up log: what runs where, and how big the KV cache is."""
        a = self.args
        params = self.num_params
        tokens = self.num_kv_blocks * self.block_size
        kv_gib = (
            self.num_kv_blocks * kv_cache.block_bytes(a, self.block_size, self.kv_dtype) / 2**30
        )
        threads = f" ({torch.get_num_threads()} threads)" if self.device.type == "cpu" else ""
        return (
            f"{a.num_layers} layers, {params / 1e6:.1f}M parameters on {self.device}{threads}, "
            f"dtype {str(self.dtype).removeprefix('torch.')}"
            + f", linear weights {self.weight_dtype} ({self.weight_dtype_reason})"
            + (
                ""
                if self.kv_dtype == self.dtype
                else f", KV cache {str(self.kv_dtype).removeprefix('torch.')}"
            )
            + f"; KV cache {self.num_kv_blocks} blocks "
            f"x {self.block_size} tokens = {tokens} tokens ({kv_gib:.2f} GiB)"
        )

    def set_decode_kernel(self, kernel: Callable[..., torch.Tensor] | None) -> None:
        """Decode attention through ``kernel`` (layers/triton_decode.paged_decode) or SDPA (None)."""
        self.decode_kernel = kernel
        for m in self.model.modules():
            if isinstance(m, PagedAttention):
                m.decode_kernel = kernel

    def _max_model_len(self, config: EngineConfig) -> int:
        limit = self.args.max_position_embeddings
        if config.max_model_len is None:
            return limit
        if not 0 < config.max_model_len <= limit:
            raise ModelConfigError(
                f"max_model_len must be in [1, {limit}] (max_position_embeddings)"
            )
        return config.max_model_len

    @torch.inference_mode()
    def _profile_forward(self) -> None:
        # one prefill of max_num_batched_tokens tokens without a cache, to measure peak activations
        t = min(self.config.max_num_batched_tokens, self.max_model_len)
        ids = torch.zeros(t, dtype=torch.int64, device=self.device)
        hidden = self.model(
            ids, torch.arange(t, device=self.device), AttentionMetadata(None, cache_free=True)
        )
        self.model.compute_logits(hidden[-min(t, self.config.max_num_seqs) :])
        torch.cuda.synchronize(self.device)

    # execute

    @torch.inference_mode()
    def execute(self, seqs: list[Sequence], num_new_tokens: list[int]) -> list[TokenSample | None]:
        if not seqs:
            return []
        step = prepare_step(
            seqs,
            num_new_tokens,
            self.block_size,
            self.device,
            self.kv_dtype,  # decode masks are added to scores in the cache's dtype
            self.args.sliding_window,
            decode_kernel=self.decode_kernel is not None,
        )
        hidden = self._forward(step)
        results: list[TokenSample | None] = [None] * len(seqs)
        if not step.sample_rows:
            return results
        logits = self.model.compute_logits(hidden[step.logits_indices])  # [N, V] fp32
        sampling_seqs = [seqs[step.order[r]] for r in step.sample_rows]
        for r, token in zip(step.sample_rows, self._sample(sampling_seqs, logits), strict=True):
            results[step.order[r]] = token
        return results

    def _forward(self, step: StepInputs) -> torch.Tensor:
        if self.graphs is None or step.meta.prefill is not None:
            return self.model(step.input_ids, step.positions, step.meta)
        return self.graphs.run(step)

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor) -> list[TokenSample]:
        params = [s.sampling_params for s in seqs]
        positions = [s.num_tokens for s in seqs]
        histories = None
        if any(
            p.presence_penalty or p.frequency_penalty or p.repetition_penalty != 1.0 for p in params
        ):
            histories = [(s.token_ids[: s.num_prompt_tokens], s.completion_token_ids) for s in seqs]
        batch = build_sampling_batch(params, positions, histories, logits.shape[1], self.device)
        token_ids = sample(logits, batch, self._gen, self._seed_gen)  # [N]
        ids = token_ids.tolist()
        out = [TokenSample(t, None, None) for t in ids]
        want = [i for i, p in enumerate(params) if p.logprobs]
        if want:
            rows = torch.tensor(want, device=self.device)
            num_top = max(params[i].top_logprobs for i in want)
            chosen, top_vals, top_ids = compute_logprobs(logits[rows], token_ids[rows], num_top)
            chosen_l, vals_l, ids_l = chosen.tolist(), top_vals.tolist(), top_ids.tolist()
            for j, i in enumerate(want):
                k = params[i].top_logprobs
                out[i].logprob = chosen_l[j]
                out[i].top_logprobs = list(zip(ids_l[j][:k], vals_l[j][:k], strict=True))
        return out

    # parity helper

    @torch.inference_mode()
    def prefill_logits(self, token_ids: list[int]) -> torch.Tensor:
        """Logits [S, V] fp32 for every position of one prompt, computed without the cache."""
        ids = torch.tensor(token_ids, dtype=torch.int64, device=self.device)
        positions = torch.arange(len(token_ids), device=self.device)
        meta = AttentionMetadata(None, cache_free=True, sliding_window=self.args.sliding_window)
        return self.model.compute_logits(self.model(ids, positions, meta))
