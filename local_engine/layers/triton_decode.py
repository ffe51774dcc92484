"""Paged decode attention as a Triton kernel (CUDA only; imported only when CUDA is in use).

One program per (sequence, KV head): it walks the sequence's blocks through its block table,
keeping an online softmax for the ``G`` query heads that share the KV head, so only the
sequence's own context is read (the SDPA path gathers a padded copy). Shapes are static per
batch size, which is what lets the runner capture decode in CUDA graphs. Also runs under
``TRITON_INTERPRET=1`` on CPU tensors, which is how the tests check it without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _paged_decode_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    bt_ptr,
    ctx_ptr,
    out_ptr,
    scale,
    window,
    stride_qb,
    stride_qh,
    stride_kb,
    stride_ks,
    stride_kh,
    stride_bt,
    stride_ob,
    stride_oh,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    DIM_PAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    ctx = tl.load(ctx_ptr + b)
    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, DIM_PAD)
    s = tl.arange(0, BLOCK)
    g_ok = g < GROUP
    d_ok = d < HEAD_DIM
    heads = kvh * GROUP + g
    q = tl.load(
        q_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :],
        mask=g_ok[:, None] & d_ok[None, :],
        other=0.0,
    ).to(tl.float32)  # [G, D]
    m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_sum = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, DIM_PAD], tl.float32)
    lo = tl.maximum(ctx - window, 0)  # first visible position (window >= ctx when there is none)
    for i in range(lo // BLOCK, tl.cdiv(ctx, BLOCK)):
        block = tl.load(bt_ptr + b * stride_bt + i).to(tl.int64)
        pos = i * BLOCK + s
        ok = (pos < ctx) & (pos >= lo)
        kv_off = block * stride_kb + s[:, None] * stride_ks + kvh * stride_kh + d[None, :]
        kv_mask = ok[:, None] & d_ok[None, :]
        k = tl.load(k_ptr + kv_off, mask=kv_mask, other=0.0).to(tl.float32)  # [S, D]
        v = tl.load(v_ptr + kv_off, mask=kv_mask, other=0.0).to(tl.float32)
        scores = tl.sum(q[:, None, :] * k[None, :, :], axis=2) * scale  # [G, S]
        scores = tl.where(ok[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        p = tl.exp(scores - m_new[:, None])
        alpha = tl.exp(m - m_new)
        l_sum = l_sum * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
        m = m_new
    out = acc / l_sum[:, None]
    tl.store(
        out_ptr + b * stride_ob + heads[:, None] * stride_oh + d[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=g_ok[:, None] & d_ok[None, :],
    )


def paged_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    ctx_lens: torch.Tensor,
    window: int | None,
) -> torch.Tensor:
    """q: [B, H, D]; caches: [blocks, block_size, Hkv, D]; block_tables: [B, NB]; ctx_lens: [B] -> [B, H, D]."""
    b, h, dim = q.shape
    block_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = h // kv_heads
    q = q.contiguous()
    out = torch.empty_like(q)
    _paged_decode_kernel[(b, kv_heads)](
        q,
        k_cache,
        v_cache,
        block_tables,
        ctx_lens,
        out,
        dim**-0.5,
        window if window is not None else 2**30,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        block_tables.stride(0),
        out.stride(0),
        out.stride(1),
        GROUP=group,
        GROUP_PAD=triton.next_power_of_2(group),
        HEAD_DIM=dim,
        DIM_PAD=triton.next_power_of_2(dim),
        BLOCK=block_size,
    )
    return out
