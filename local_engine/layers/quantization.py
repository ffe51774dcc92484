"""Weight-only quantized linears for CPU: module swaps applied after the weights are loaded.

``quantize_model(model, weight_dtype, kept_4bit)`` replaces every ``Linear`` of the decoder
layers with one that keeps its weights in ``weight_dtype`` and multiplies with PyTorch's
CPU kernels; the model file knows nothing of it. Activations stay in the engine's dtype between
layers (norms, RoPE, attention, residuals in float32 on CPU); each matmul casts its input to
bfloat16 and its output back, because these kernels are fast only in bfloat16 (with float32
inputs the int4/int8 kernels take a scalar path, 30-60x slower where measured).

    bfloat16  ``F.linear`` in bfloat16 (oneDNN; AVX512-BF16/AMX CPUs)
    int8      per-output-channel symmetric int8, ``aten._weight_int8pack_mm`` (re-rounded: lossy)
    int4      groups of 32 columns, ``w = (q - 8) * scale + zero`` (PyTorch's convention),
              ``aten._weight_int4pack_mm_for_cpu``. A GGUF Q4_0/Q4_1/Q4_K tensor is repacked as
              it is (``w = q * d + m`` -> ``zero = m + 8 * d``: the same q, scales in bfloat16);
              any other tensor is rounded to 4 bits per group (min/max), which is lossy.

The logits projection (a quarter of the demo model's multiply-adds: 49,152 x 576) runs in
bfloat16 too, then each row's ``EXACT_TOP_LOGITS`` largest logits are recomputed from the
float32 weights (``RefinedLogits``): bfloat16 logits are 0.125 apart near 25, which tied the demo
model's top two first tokens for "What is the capital of France?" (float32: 25.33 vs 25.24) and
changed its answer. So the greedy pick and the top logprobs are float32's; the tail of the
distribution (what temperature sampling rarely reaches) keeps bfloat16's rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from local_engine.config import WEIGHT_DTYPES
from local_engine.errors import EngineError
from local_engine.gguf_quants import GROUP, GroupQuantized
from local_engine.layers.linear import Linear

__all__ = [
    "QUANTIZED_WEIGHT_DTYPES",
    "WEIGHT_DTYPES",
    "Bf16Linear",
    "Int4Linear",
    "Int8Linear",
    "QuantizationError",
    "RefinedLogits",
    "cpu_has_native_bf16",
    "quantize_model",
    "resolve_weight_dtype",
]

QUANTIZED_WEIGHT_DTYPES = tuple(d for d in WEIGHT_DTYPES if d not in ("auto", "float32"))
COMPUTE_DTYPE = torch.bfloat16
EXACT_TOP_LOGITS = 20  # = sampling_params.MAX_TOP_LOGPROBS: top logprobs come out exact
INT4_N_MULTIPLE = 16  # _convert_weight_to_int4pack_for_cpu packs rows in 16s


class QuantizationError(EngineError, ValueError):
    """The weight dtype cannot be used for this model or device."""


class _QuantLinear(nn.Module):
    bias: torch.Tensor | None

    def __init__(self, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def _mm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, K] -> [T, N] in x's dtype
        y = self._mm(x.to(COMPUTE_DTYPE)).to(x.dtype)
        return y if self.bias is None else y + self.bias


class Bf16Linear(_QuantLinear):
    weight: torch.Tensor

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__(bias)
        self.register_buffer("weight", weight.detach().to(COMPUTE_DTYPE).contiguous())

    def _mm(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class Int8Linear(_QuantLinear):
    qweight: torch.Tensor
    scales: torch.Tensor

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__(bias)
        w = weight.detach().float()  # [N, K]
        scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)  # [N]
        self.register_buffer(
            "qweight", (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
        )
        self.register_buffer("scales", scale.to(COMPUTE_DTYPE))

    def _mm(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, self.qweight, self.scales)


class RefinedLogits(nn.Module):
    """hidden [N, H] -> float32 logits [N, V]: bfloat16 matmul, the top ``k`` of each row exact."""

    weight_bf16: torch.Tensor

    def __init__(self, weight: torch.Tensor, k: int = EXACT_TOP_LOGITS) -> None:
        super().__init__()
        self.weight = weight  # [V, H] the float32 projection itself (tied: the embedding table)
        self.register_buffer("weight_bf16", weight.detach().to(COMPUTE_DTYPE).contiguous())
        self.k = min(k, weight.shape[0])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        n, h = hidden.shape
        logits = F.linear(hidden.to(COMPUTE_DTYPE), self.weight_bf16).float()  # [N, V]
        top = logits.topk(self.k, dim=-1).indices  # [N, k]
        rows = self.weight.index_select(0, top.flatten()).view(n, self.k, h)  # [N, k, H]
        exact = torch.bmm(rows.float(), hidden.float().unsqueeze(-1)).squeeze(-1)  # [N, k]
        return logits.scatter_(1, top, exact)


def round_to_4bit(weight: torch.Tensor) -> GroupQuantized:
    """Min/max rounding of each group of 32 columns to 16 levels (for tensors not stored in 4 bits)."""
    rows, cols = weight.shape
    g = weight.detach().float().view(rows, cols // GROUP, GROUP)
    low, high = g.amin(dim=-1), g.amax(dim=-1)  # [R, K / 32]
    scale = ((high - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
    q = ((g - low[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.uint8)
    return GroupQuantized(q.view(rows, cols), scale, low)


class Int4Linear(_QuantLinear):
    qweight: torch.Tensor
    scales_and_zeros: torch.Tensor

    def __init__(self, parts: GroupQuantized, bias: torch.Tensor | None = None) -> None:
        super().__init__(bias)
        # packs q [N, K] to [N, K / 2] uint8 in the layout the CPU kernel reads
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(parts.q.to(torch.int32), 1)
        self.register_buffer("qweight", packed)
        zero = parts.offset + 8 * parts.scale  # kernel: (q - 8) * scale + zero
        # [K / 32, N, 2]: scale and zero per group, groups first
        sz = torch.stack([parts.scale.t(), zero.t()], dim=-1).to(COMPUTE_DTYPE).contiguous()
        self.register_buffer("scales_and_zeros", sz)

    def _mm(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            x, self.qweight, GROUP, self.scales_and_zeros
        )


def _int4_parts(
    name: str, lin: Linear, kept: dict[tuple[str, object], GroupQuantized]
) -> GroupQuantized:
    # the GGUF's own parts when every shard came as 4-bit, else rounded from the loaded weight
    pname = f"{name}.weight"
    keys = [(pname, s) for s in lin.shards] if len(lin.shards) > 1 else [(pname, None)]
    if all(k in kept for k in keys):
        parts = [kept[k] for k in keys]
        return GroupQuantized(
            torch.cat([p.q for p in parts]),
            torch.cat([p.scale for p in parts]),
            torch.cat([p.offset for p in parts]),
        )
    return round_to_4bit(lin.weight)


def cpu_has_native_bf16() -> bool:
    """True when oneDNN is built in and the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX).

    ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is not enough: it is also true on plain
    AVX512 CPUs, where oneDNN emulates bfloat16 (slower than float32), so the CPU's own
    capability flags (``torch.cpu.get_capabilities()``, cpuinfo) decide."""
    if not torch.backends.mkldnn.is_available():
        return False
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None:  # older torch: no per-feature flags
        return False
    caps = get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_weight_dtype(
    requested: str,
    *,
    gguf: bool,
    device: torch.device,
    dtype: torch.dtype,
    native_bf16: bool,
) -> tuple[str | None, str]:
    """(the linears' swap: one of QUANTIZED_WEIGHT_DTYPES, or None to keep them in ``dtype``; why).

    ``auto`` is bfloat16 for a GGUF model in float32 on a CPU with native bf16 matmuls: its
    weights were quantized to begin with, and bfloat16 multiplies ran ~1.3-2.6x faster than
    float32 on the demo model with 99% of fp32's greedy picks (bench/results/engine_quant.md).
    Otherwise (safetensors checkpoints, GPUs, CPUs without native bf16, --dtype other than
    float32) nothing is swapped, as before. ``float32`` never swaps and needs ``dtype`` float32
    (it pins exactness); an explicit choice always wins."""
    dtype_name = str(dtype).removeprefix("torch.")
    if requested == "float32":
        if dtype != torch.float32:
            raise QuantizationError(
                f"weight dtype float32 keeps the linear weights in --dtype, which is {dtype_name} "
                "here; pass --dtype float32 as well"
            )
        return None, "asked for"
    if requested != "auto":
        return requested, "asked for"
    if not gguf:
        return None, "auto: not a GGUF model"
    if device.type != "cpu":
        return None, f"auto: GGUF on {device}"
    if dtype != torch.float32:
        return None, f"auto: --dtype {dtype_name}"
    if not native_bf16:
        return None, "auto: GGUF, but this CPU has no native bfloat16 matmul"
    return "bfloat16", "auto: GGUF on a CPU with native bfloat16 matmul"


def _check_shape(name: str, weight: torch.Tensor, weight_dtype: str) -> None:
    n, k = weight.shape
    if k % GROUP or (weight_dtype == "int4" and n % INT4_N_MULTIPLE):
        raise QuantizationError(
            f"weight dtype {weight_dtype} needs in_features divisible by {GROUP}"
            + (f" and out_features by {INT4_N_MULTIPLE}" if weight_dtype == "int4" else "")
            + f"; {name} is {n} x {k} (use --weight-dtype float32)"
        )


def quantize_model(
    model: nn.Module,
    weight_dtype: str,
    kept_4bit: dict[tuple[str, object], GroupQuantized] | None = None,
) -> None:
    """Swap every ``Linear`` of ``model`` (a loaded DecoderForCausalLM) for one in ``weight_dtype``.

    Raises QuantizationError for an unknown dtype, a device other than CPU, or a layer shape the
    kernels do not take. The float weights are dropped."""
    if weight_dtype not in QUANTIZED_WEIGHT_DTYPES:
        raise QuantizationError(
            f"weight dtype {weight_dtype!r} is not one of {', '.join(WEIGHT_DTYPES)}"
        )
    device = next(model.parameters()).device
    if device.type != "cpu" and weight_dtype != "bfloat16":
        raise QuantizationError(
            f"weight dtype {weight_dtype} runs on CPU only (PyTorch's CPU int4/int8 kernels); "
            f"this engine runs on {device}"
        )
    kept = kept_4bit or {}
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, Linear) and n != "lm_head"]
    for name, lin in linears:
        _check_shape(name, lin.weight, weight_dtype)
    with torch.no_grad():
        for name, lin in linears:
            new: nn.Module
            if weight_dtype == "int4":
                new = Int4Linear(_int4_parts(name, lin, kept), lin.bias)
            elif weight_dtype == "int8":
                new = Int8Linear(lin.weight, lin.bias)
            else:
                new = Bf16Linear(lin.weight, lin.bias)
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, new)
        head = getattr(model, "lm_head", None)  # None when tied: the embedding table
        weight = (model.get_submodule("model.embed_tokens") if head is None else head).weight
        if not isinstance(weight, torch.Tensor):
            raise QuantizationError("the logits projection has no weight tensor")
        model.logits_head = RefinedLogits(weight)
