"""Attention over the paged KV cache with PyTorch SDPA only (runs on CPU and CUDA).

One step's tokens are laid out flat, decodes first: ``[decode tokens | prefill-chunk tokens]``.
New K/V are written into the cache by slot (``index_copy_``). Then:

- decodes (one new token each) run in groups of similar context length (``step_inputs``): a
  group's blocks are gathered into a padded ``[B, Hkv, L, D]`` view and one SDPA call uses an
  additive mask built once per step. The ``G = H / Hkv`` query heads sharing a KV head ride
  on the query-length axis, so SDPA sees plain multi-head attention with no KV repetition;
- prefill chunks run one SDPA call per sequence (no padding waste on long prompts). A chunk
  that is its whole context attends causally over its own K/V; a chunk after cached tokens
  gathers its blocks and uses an offset causal mask.

On CUDA with Triton, decodes instead run ``layers/triton_decode.py`` (reads only each
sequence's own blocks; static shapes for CUDA graphs). With ``AttentionMetadata.cache_free`` the layer attends over the step's own K/V only
(whole-prompt prefill, used by parity tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(slots=True)
class AttentionGroup:
    """Decoding sequences attended together in one padded SDPA call (or one kernel call)."""

    start: int  # first flat token of the group
    end: int  # one past its last flat token
    block_tables: torch.Tensor  # [B, NB] int64, padded with block 0
    mask: torch.Tensor | None  # [B, 1, 1, NB * block_size] additive, model dtype (SDPA path)
    ctx_lens: torch.Tensor | None = None  # [B] int32 context lengths (kernel path: mask is None)


@dataclass(slots=True)
class PrefillChunk:
    """One sequence's chunk of several new tokens."""

    start: int  # first flat token of the chunk
    end: int  # one past its last flat token
    block_table: (
        torch.Tensor | None
    )  # [NB] int64 when earlier tokens are cached; None: own K/V only
    mask: torch.Tensor | None  # [q, ctx] bool (True = attend); None: plain causal


@dataclass(slots=True)
class AttentionMetadata:
    slot_mapping: torch.Tensor | None  # [T] int64 cache slot per new token; None when cache_free
    decode: list[AttentionGroup] | None = (
        None  # sequences with exactly one new token (one group with the kernel)
    )
    prefill: list[PrefillChunk] | None = None  # sequences with a chunk of several tokens
    cache_free: bool = False
    sliding_window: int | None = (
        None  # read by the cache-free and kernel paths (masks carry it otherwise)
    )


class PagedAttention(nn.Module):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        # k_cache / v_cache: [num_blocks, block_size, Hkv, D], views into the runner's allocation
        self.k_cache = torch.empty(0)
        self.v_cache = torch.empty(0)
        # set by the runner on CUDA when Triton is importable: layers/triton_decode.paged_decode
        self.decode_kernel: Callable[..., torch.Tensor] | None = None

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        # q: [T, H, D]; k, v: [T, Hkv, D] -> [T, H * D]
        if meta.cache_free:
            return self._cache_free(q, k, v, meta.sliding_window)
        if meta.slot_mapping is None:
            raise ValueError("slot_mapping is required unless cache_free")
        kv_shape = (-1, self.num_kv_heads, self.head_dim)
        # the cache may be narrower than the activations (bfloat16 with quantized weights)
        self.k_cache.view(kv_shape).index_copy_(0, meta.slot_mapping, k.to(self.k_cache.dtype))
        self.v_cache.view(kv_shape).index_copy_(0, meta.slot_mapping, v.to(self.v_cache.dtype))
        out = torch.empty_like(q)
        kernel = self.decode_kernel
        for g in meta.decode or ():
            if g.mask is None:  # the kernel path: step_inputs leaves the mask out for it
                if kernel is None:
                    raise ValueError("a decode group without a mask needs the decode kernel")
                out[g.start : g.end] = kernel(
                    q[g.start : g.end],
                    self.k_cache,
                    self.v_cache,
                    g.block_tables,
                    g.ctx_lens,
                    meta.sliding_window,
                )
            else:
                out[g.start : g.end] = self._decode(q[g.start : g.end], g)
        for c in meta.prefill or ():
            out[c.start : c.end] = self._prefill(
                q[c.start : c.end], k[c.start : c.end], v[c.start : c.end], c
            )
        return out.flatten(1)

    def _gather(self, block_tables: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # block_tables: [B, NB] -> k, v: [B, Hkv, NB * block_size, D]
        b, nb = block_tables.shape
        bs = self.k_cache.shape[1]
        ids = block_tables.flatten()
        # index_select copies whole blocks; advanced indexing (cache[bt]) is ~15x slower on CPU
        k = self.k_cache.index_select(0, ids).view(b, nb * bs, self.num_kv_heads, self.head_dim)
        v = self.v_cache.index_select(0, ids).view(b, nb * bs, self.num_kv_heads, self.head_dim)
        return k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)

    def _decode(self, q: torch.Tensor, g: AttentionGroup) -> torch.Tensor:
        # q: [B, H, D] -> [B, Hkv, G, D]: grouped heads ride on the query-length axis
        b = q.shape[0]
        group = self.num_heads // self.num_kv_heads
        k, v = self._gather(g.block_tables)
        qg = q.view(b, self.num_kv_heads, group, self.head_dim).to(k.dtype)
        o = F.scaled_dot_product_attention(qg, k, v, attn_mask=g.mask)  # [B, Hkv, G, D]
        return o.reshape(b, self.num_heads, self.head_dim)

    def _prefill(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, c: PrefillChunk
    ) -> torch.Tensor:
        # q: [q, H, D]; k, v: [q, Hkv, D] -> [q, H, D]
        if c.block_table is not None:
            if c.mask is None:
                raise ValueError("a chunk after cached tokens needs its mask")
            k, v = self._gather(c.block_table.unsqueeze(0))  # [1, Hkv, ctx, D]
            k, v = k[:, :, : c.mask.shape[1]], v[:, :, : c.mask.shape[1]]
            q = q.to(k.dtype)
        else:
            k, v = k.transpose(0, 1).unsqueeze(0), v.transpose(0, 1).unsqueeze(0)
        qt = q.transpose(0, 1).unsqueeze(0)  # [1, H, q, D]
        if c.mask is None:
            o = F.scaled_dot_product_attention(qt, k, v, is_causal=True, enable_gqa=True)
        else:
            o = F.scaled_dot_product_attention(qt, k, v, attn_mask=c.mask, enable_gqa=True)
        return o.squeeze(0).transpose(0, 1)

    def _cache_free(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None
    ) -> torch.Tensor:
        # one sequence, all tokens new: q [T, H, D] -> [1, H, T, D]
        t = q.shape[0]
        qt, kt, vt = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
        if window is None or t <= window:
            o = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True)
        else:
            pos = torch.arange(t, device=q.device)
            allowed = (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - window)
            o = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=allowed, enable_gqa=True)
        return o.squeeze(0).transpose(0, 1).flatten(1)
