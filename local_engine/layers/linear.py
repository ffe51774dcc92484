"""Linear layers whose weights are packed from several checkpoint tensors.

Each parameter carries a ``weight_loader(param, loaded, shard_id)``; the model's loader looks
the checkpoint name up in a table (see ``models/weights.py``) and calls it. Plain linears copy
the whole tensor; packed ones copy into their slice.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from local_engine.errors import EngineError


class WeightShapeError(EngineError):
    """A checkpoint tensor does not have the shape the model config implies."""


def copy_checked(dst: torch.Tensor, src: torch.Tensor, what: str) -> None:
    if dst.shape != src.shape:
        raise WeightShapeError(
            f"{what}: checkpoint shape {tuple(src.shape)}, expected {tuple(dst.shape)}"
        )
    dst.copy_(src)


def default_weight_loader(
    param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None
) -> None:
    copy_checked(param.data, loaded, "weight")


WeightLoader = Callable[[nn.Parameter, torch.Tensor, object], None]
WEIGHT_LOADER = "weight_loader"  # the attribute models/weights.py looks up on each parameter


def set_weight_loader(param: torch.Tensor, loader: WeightLoader) -> None:
    setattr(param, WEIGHT_LOADER, loader)  # a plain attribute on the tensor object


def _param(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)


class Linear(nn.Module):
    """y = x W^T (+ b); the output is the concatenation of ``out_sizes`` shards."""

    def __init__(
        self,
        in_features: int,
        out_sizes: list[int],
        bias: bool,
        dtype: torch.dtype,
        device: torch.device,
        shard_names: list[object] | None = None,
    ) -> None:
        super().__init__()
        self.out_sizes = out_sizes
        offsets = [sum(out_sizes[:i]) for i in range(len(out_sizes))]
        names = shard_names if shard_names is not None else list(range(len(out_sizes)))
        self.shards = {
            name: (off, size) for name, off, size in zip(names, offsets, out_sizes, strict=True)
        }
        self.weight = _param((sum(out_sizes), in_features), dtype, device)
        set_weight_loader(self.weight, self._load_shard)
        self.bias = _param((sum(out_sizes),), dtype, device) if bias else None
        if self.bias is not None:
            set_weight_loader(self.bias, self._load_shard)

    def _load_shard(
        self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None
    ) -> None:
        if shard_id is None:
            copy_checked(param.data, loaded, "linear")
            return
        offset, size = self.shards[shard_id]
        copy_checked(param.data.narrow(0, offset, size), loaded, f"shard {shard_id}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def qkv_linear(
    hidden: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    bias: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> Linear:
    sizes = [num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim]
    return Linear(hidden, sizes, bias, dtype, device, shard_names=["q", "k", "v"])
