"""KV cache sizing and allocation.

One tensor ``[2, layers, blocks, block_size, Hkv, D]`` holds every layer's keys and values;
each attention layer gets views of its slice. CPU: ``config.num_kv_blocks`` or as many blocks
as ``cpu_kv_cache_bytes`` holds. CUDA: a fraction of the memory left after the model and a
profiling forward pass (the vLLM / nano-vllm rule).
"""

from __future__ import annotations

import torch
from torch import nn

from local_engine.config import EngineConfig
from local_engine.errors import EngineError
from local_engine.layers.attention import PagedAttention
from local_engine.models.decoder_args import DecoderArgs


class KVCacheTooSmallError(EngineError):
    """Not even one KV block fits in the memory given to the cache."""


def block_bytes(a: DecoderArgs, block_size: int, dtype: torch.dtype) -> int:
    element = torch.empty(0, dtype=dtype).element_size()
    return 2 * a.num_layers * block_size * a.num_kv_heads * a.head_dim * element


def cpu_num_blocks(config: EngineConfig, per_block: int) -> int:
    if config.num_kv_blocks is not None:
        return config.num_kv_blocks
    return config.cpu_kv_cache_bytes // per_block


def cuda_num_blocks(config: EngineConfig, per_block: int, device: torch.device) -> int:
    """Call after a profiling forward pass, so the peak activation memory is known."""
    if config.num_kv_blocks is not None:
        return config.num_kv_blocks
    free, total = torch.cuda.mem_get_info(device)
    stats = torch.cuda.memory_stats(device)
    peak, current = stats["allocated_bytes.all.peak"], stats["allocated_bytes.all.current"]
    # budget: utilization * total, minus everything in use now, minus the activations' extra peak
    budget = int(total * config.gpu_memory_utilization) - (total - free) - (peak - current)
    return budget // per_block


def allocate(
    model: nn.Module,
    a: DecoderArgs,
    num_blocks: int,
    block_size: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    if num_blocks < 1:
        raise KVCacheTooSmallError(
            "no KV cache block fits: raise cpu_kv_cache_bytes / gpu_memory_utilization or set num_kv_blocks"
        )
    # cache: [2, L, blocks, block_size, Hkv, D]
    cache = torch.zeros(
        2,
        a.num_layers,
        num_blocks,
        block_size,
        a.num_kv_heads,
        a.head_dim,
        dtype=dtype,
        device=device,
    )
    layers = [m for m in model.modules() if isinstance(m, PagedAttention)]
    for i, attn in enumerate(layers):
        attn.k_cache, attn.v_cache = cache[0, i], cache[1, i]
    return cache
