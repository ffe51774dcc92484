"""Engine configuration: one typed object, defaults as named constants."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BLOCK_SIZE = 16
DEFAULT_MAX_NUM_SEQS = 256
DEFAULT_MAX_NUM_BATCHED_TOKENS = 2048
DEFAULT_MAX_WAITING = 1024
DEFAULT_CPU_KV_CACHE_BYTES = 512 * 1024**2
DEFAULT_GPU_MEMORY_UTILIZATION = 0.90
# float32: weights in the engine's dtype (no swap; exact); auto: bfloat16 for a GGUF model on a CPU
# with native bf16 matmuls (AVX512-BF16/AMX), else float32 (layers/quantization.py,
# resolve_weight_dtype); bfloat16/int8/int4 are kept so in memory and multiplied in bfloat16:
# int4 repacks GGUF 4-bit tensors exactly, int8 is per channel
WEIGHT_DTYPES = ("auto", "float32", "bfloat16", "int8", "int4")


@dataclass(slots=True)
class EngineConfig:
    model: str  # local checkpoint directory (or a hub id when online)
    dtype: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU; or float32/float16/bfloat16
    weight_dtype: str = "auto"  # linear weights in memory: one of WEIGHT_DTYPES
    device: str = "auto"  # auto: cuda if available else cpu
    block_size: int = DEFAULT_BLOCK_SIZE
    num_kv_blocks: int | None = None  # None: sized from memory (see below)
    cpu_kv_cache_bytes: int = DEFAULT_CPU_KV_CACHE_BYTES
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS  # running sequences per step
    max_num_batched_tokens: int = (
        DEFAULT_MAX_NUM_BATCHED_TOKENS  # token budget per step (chunked prefill)
    )
    max_model_len: int | None = None  # None: from config.json
    max_waiting: int = DEFAULT_MAX_WAITING  # waiting queue bound; past it the server answers 503
    enable_prefix_caching: bool = True
    enforce_eager: bool = False  # True: no CUDA graphs / torch.compile
    cpu_malloc_tuning: bool = True  # CPU: keep freed tensor memory for reuse (see host_memory.py)
    cpu_threads: int | None = None  # CPU: torch intra-op threads (None: torch's default)
    served_model_name: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError("block_size must be >= 1")
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be >= 1")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.weight_dtype not in WEIGHT_DTYPES:
            raise ValueError(
                f"weight_dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {self.weight_dtype!r}"
            )
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError("cpu_threads must be >= 1")
        if self.max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")
