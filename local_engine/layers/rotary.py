"""Rotary position embeddings (rotate-half layout) with the rope scalings we support.

Inverse frequencies are chosen by ``rope_type`` from a table of functions, so a new scaling
is one entry. cos/sin are precomputed for every position up to ``max_positions`` in fp32
(same arithmetic as transformers), looked up once per step (``cos_sin``) and applied by every
layer (``apply_rotary``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True, slots=True)
class RopeArgs:
    theta: float
    rope_type: str = "default"
    params: dict[str, Any] = field(default_factory=dict)  # the scaling dict as in config.json


def _default_inv_freq(dim: int, rope: RopeArgs) -> torch.Tensor:
    # inv_freq: [dim / 2]
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return 1.0 / (rope.theta**exponents)


def _linear_inv_freq(dim: int, rope: RopeArgs) -> torch.Tensor:
    return _default_inv_freq(dim, rope) / float(rope.params["factor"])


def _llama3_inv_freq(dim: int, rope: RopeArgs) -> torch.Tensor:
    inv_freq = _default_inv_freq(dim, rope)
    factor = float(rope.params["factor"])
    low = float(rope.params["low_freq_factor"])
    high = float(rope.params["high_freq_factor"])
    old_len = float(rope.params["original_max_position_embeddings"])
    low_freq_wavelen, high_freq_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    # long wavelengths are slowed by `factor`, short ones kept, the band between interpolated
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


INV_FREQ_BY_ROPE_TYPE: dict[str, Callable[[int, RopeArgs], torch.Tensor]] = {
    "default": _default_inv_freq,
    "linear": _linear_inv_freq,
    "llama3": _llama3_inv_freq,
}


class RotaryEmbedding(nn.Module):
    cos: torch.Tensor  # buffers, registered in __init__
    sin: torch.Tensor

    def __init__(
        self, head_dim: int, max_positions: int, rope: RopeArgs, device: torch.device
    ) -> None:
        super().__init__()
        inv_freq = INV_FREQ_BY_ROPE_TYPE[rope.rope_type](head_dim, rope)
        positions = torch.arange(max_positions, dtype=torch.int64).float()
        freqs = torch.outer(positions, inv_freq)  # [P, D/2]
        # cos/sin: [P, D/2] fp32; the rotate-half layout repeats them for both halves
        self.register_buffer("cos", freqs.cos().to(device), persistent=False)
        self.register_buffer("sin", freqs.sin().to(device), persistent=False)

    def cos_sin(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # positions: [T] -> cos, sin: [T, 1, D/2] in the activations' dtype (shared by every layer)
        return self.cos[positions].unsqueeze(1).to(dtype), self.sin[positions].unsqueeze(1).to(
            dtype
        )


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    # q: [T, H, D]; k: [T, Hkv, D]; cos_sin from RotaryEmbedding.cos_sin
    cos, sin = cos_sin
    return _rotate(q, cos, sin), _rotate(k, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
