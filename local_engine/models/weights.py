"""Checkpoint -> module mapping, as data.

``PACKED_MODULES`` says which checkpoint projections are packed into one of our linears and
under which shard; every other tensor maps to the parameter of the same name. Each parameter
carries its own ``weight_loader`` (see ``layers/linear.py``), so loading is one loop.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from local_engine.errors import EngineError
from local_engine.gguf_quants import GroupQuantized
from local_engine.layers.linear import default_weight_loader

# checkpoint module name -> (our packed module, shard id)
PACKED_MODULES: dict[str, tuple[str, object]] = {
    "q_proj": ("qkv_proj", "q"),
    "k_proj": ("qkv_proj", "k"),
    "v_proj": ("qkv_proj", "v"),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}

# checkpoint tensors that carry no weights we use (old checkpoints saved rotary buffers)
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class WeightLoadError(EngineError):
    """The checkpoint's tensors do not match the model its config.json describes."""


def map_name(name: str) -> tuple[str, object]:
    """Checkpoint tensor name -> (our parameter name, shard id or None)."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part in PACKED_MODULES:
            packed, shard = PACKED_MODULES[part]
            return ".".join(parts[:i] + [packed] + parts[i + 1 :]), shard
    return name, None


def _shards(model: nn.Module, pname: str) -> set[object]:
    owner = model.get_submodule(pname.rpartition(".")[0])
    shards = getattr(owner, "shards", None)
    return set(shards) if shards and len(shards) > 1 else {None}


# (parameter name, shard id) -> the 4-bit parts it was loaded from (layers/quantization.py)
Kept4Bit = dict[tuple[str, object], GroupQuantized]


def load_weights(
    model: nn.Module,
    tensors: Iterable[tuple[str, torch.Tensor | GroupQuantized]],
    tied: bool,
    kept_4bit: Kept4Bit | None = None,
) -> None:
    """Copy every checkpoint tensor into its parameter. 4-bit tensors are dequantized into it;
    with ``kept_4bit`` their parts are also kept there, for an exact int4 repack."""
    params = dict(model.named_parameters())
    expected = {pname: _shards(model, pname) for pname in params}  # shards still to load
    unexpected: list[str] = []
    with torch.no_grad():
        for name, tensor in tensors:
            if name.endswith(IGNORED_SUFFIXES) or (tied and name == "lm_head.weight"):
                continue
            pname, shard = map_name(name)
            param = params.get(pname)
            if param is None:
                unexpected.append(name)
                continue
            if isinstance(tensor, GroupQuantized):
                if kept_4bit is not None:
                    kept_4bit[(pname, shard)] = tensor
                tensor = tensor.dequantize()
            loader = getattr(param, "weight_loader", default_weight_loader)
            try:
                loader(param, tensor.to(param.dtype), shard)
            except EngineError as exc:
                raise WeightLoadError(f"{name}: {exc}") from exc
            if shard is None:
                expected[pname].clear()
            else:
                expected[pname].discard(shard)
    missing = [p for p, shards in expected.items() if shards]
    if unexpected or missing:
        raise WeightLoadError(
            f"checkpoint does not match the model: missing {missing[:8] or 'none'}, "
            f"unexpected {unexpected[:8] or 'none'}"
        )
