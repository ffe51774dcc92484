"""GGML block formats unpacked with torch: the 4- and 8-bit types most GGUF files use.

gguf's numpy kernels (``gguf.quants.dequantize``) are the reference and the fallback for every
other type; these exist because they are ~10x faster on a whole model and because they return
the blocks' parts, not just floats: ``unpack_4bit`` gives ``w = q * scale + offset`` per group
of 32 columns, which is what a weight-only int4 matmul keeps in memory.

Block layouts (ggml-common.h), one row of ``K`` columns = ``K / block`` blocks:

    Q4_0  32 cols, 18 B: d f16 | 16 B nibbles (low: cols 0-15, high: 16-31)      w = d * (q - 8)
    Q4_1  32 cols, 20 B: d f16, m f16 | 16 B nibbles                            w = d * q + m
    Q8_0  32 cols, 34 B: d f16 | 32 int8                                        w = d * q
    Q4_K 256 cols, 144 B: d f16, dmin f16 | 12 B of 6-bit (scale, min) x 8 | 128 B nibbles
                          (64-col chunks: low nibbles first 32 cols, high the next 32)
                                                                  w = d * sc * q - dmin * mn
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["FAST_TYPES", "FOUR_BIT_TYPES", "GROUP", "GroupQuantized", "dequantize", "unpack_4bit"]

GROUP = 32  # columns per scale in every type here
FOUR_BIT_TYPES = frozenset({"Q4_0", "Q4_1", "Q4_K"})
FAST_TYPES = FOUR_BIT_TYPES | {"Q8_0", "F32", "F16", "BF16"}


@dataclass(frozen=True, slots=True)
class GroupQuantized:
    """A 4-bit tensor as the file holds it: ``w = q * scale + offset`` per group of GROUP columns.

    The checkpoint yields this instead of floats when the engine keeps weights in int4
    (layers/quantization.py packs it for PyTorch's int4 matmul without re-rounding anything)."""

    q: torch.Tensor  # [R, K] uint8 in 0..15
    scale: torch.Tensor  # [R, K / GROUP] float32
    offset: torch.Tensor  # [R, K / GROUP] float32

    def dequantize(self) -> torch.Tensor:
        rows, cols = self.q.shape
        w = self.q.view(rows, -1, GROUP).float() * self.scale.unsqueeze(-1)
        return (w + self.offset.unsqueeze(-1)).reshape(rows, cols)

    def map_rows(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> GroupQuantized:
        """The same row permutation applied to q, scale and offset (llama's q/k un-permute)."""
        return GroupQuantized(fn(self.q), fn(self.scale), fn(self.offset))


def _bytes(data: np.ndarray) -> torch.Tensor:
    # a copy: the file is mapped read-only and torch tensors must be writable (a memcpy per tensor)
    return torch.from_numpy(np.array(data, copy=True).reshape(-1).view(np.uint8))


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    # blocks: [R, nb, B] uint8 -> [R, nb, 1] float32 from two little-endian bytes
    return blocks[..., start : start + 2].contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    # qs: [..., n] uint8 -> [..., 2n]: the n low nibbles, then the n high ones
    return torch.cat([qs & 0x0F, qs >> 4], dim=-1)


def _k4_scale_min(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # s: [R, nb, 12] uint8 -> sc, mn: [R, nb, 8] (ggml's get_scale_min_k4)
    lo, hi = s[..., 0:4], s[..., 8:12]
    sc = torch.cat([lo & 63, (hi & 0x0F) | ((lo >> 6) << 4)], dim=-1)
    mn = torch.cat([s[..., 4:8] & 63, (hi >> 4) | ((s[..., 4:8] >> 6) << 4)], dim=-1)
    return sc, mn


def unpack_4bit(data: np.ndarray, qtype: str, cols: int) -> tuple[torch.Tensor, ...]:
    """Q4_0/Q4_1/Q4_K rows -> (q [R, K] uint8 in 0..15, scale [R, K/32], offset [R, K/32] f32)."""
    rows = data.shape[0]
    raw = _bytes(data).view(rows, -1)
    if qtype in ("Q4_0", "Q4_1"):
        b = raw.view(rows, cols // 32, -1)  # [R, nb, 18 | 20]
        d = _f16(b, 0)
        off = -8 * d if qtype == "Q4_0" else _f16(b, 2)
        q = _nibbles(b[..., -16:])  # [R, nb, 32]
        return q.reshape(rows, cols), d.reshape(rows, -1), off.reshape(rows, -1)
    if qtype == "Q4_K":
        b = raw.view(rows, cols // 256, 144)
        d, dmin = _f16(b, 0), _f16(b, 2)
        sc, mn = _k4_scale_min(b[..., 4:16])  # [R, nb, 8]
        q = _nibbles(b[..., 16:].reshape(rows, cols // 256, 4, 32))  # [R, nb, 4 chunks, 64]
        scale, off = d * sc.float(), -dmin * mn.float()
        return q.reshape(rows, cols), scale.reshape(rows, -1), off.reshape(rows, -1)
    raise ValueError(f"{qtype} is not a 4-bit type")


def _dequant_4bit(data: np.ndarray, qtype: str, cols: int) -> torch.Tensor:
    return GroupQuantized(*unpack_4bit(data, qtype, cols)).dequantize()


def dequantize(data: np.ndarray, qtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A GGUF tensor's data -> float32 tensor of ``shape`` (rows first). Types outside
    FAST_TYPES go through gguf's numpy reference kernels."""
    cols = shape[-1]
    if qtype in FOUR_BIT_TYPES:
        return _dequant_4bit(data, qtype, cols).reshape(shape)
    if qtype == "Q8_0":
        b = _bytes(data).view(data.shape[0], cols // 32, 34)
        q = b[..., 2:].contiguous().view(torch.int8).float()
        return (q * _f16(b, 0)).reshape(shape)
    if qtype in ("F32", "F16", "BF16"):
        dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[qtype]
        return _bytes(data).view(dtype).float().reshape(shape)
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as reference

    out = reference(data, GGMLQuantizationType[qtype])
    return torch.from_numpy(np.array(out, dtype=np.float32)).reshape(shape)
