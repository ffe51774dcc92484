"""Weight-only quantized linears (layers/quantization.py): the int4 repack of GGUF 4-bit tensors
is the file's own weights (probed column by column on real tensors of the demo model), the
quantized engines stay close to the float32 one, and unusable settings are clear errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from local_engine.checkpoint import GGUFCheckpoint, HFCheckpoint
from local_engine.config import EngineConfig
from local_engine.demo_gguf import demo_model_path
from local_engine.engine.model_runner import ModelRunner
from local_engine.gguf_checkpoint import GGUFFile
from local_engine.gguf_quants import GroupQuantized
from local_engine.layers.linear import Linear
from local_engine.layers.quantization import (
    Bf16Linear,
    Int4Linear,
    Int8Linear,
    QuantizationError,
    RefinedLogits,
    cpu_has_native_bf16,
    quantize_model,
    resolve_weight_dtype,
    round_to_4bit,
)
from local_engine.loader import CheckpointError

from .gguf_files import write_gguf

PROMPT = [3, 14, 15, 92, 65, 35, 8, 9, 79]
BF16_RTOL = 2**-7  # a bfloat16 value is within 2^-8 relative; scale and product both round


def _columns(layer: torch.nn.Module, cols: int) -> torch.Tensor:
    # x = identity: y[i, n] = W[n, i], so the layer's effective weights come out as W^T
    eye = torch.eye(cols, dtype=torch.float32)
    with torch.no_grad():
        return layer(eye).t()


def _demo_tensors(names: set[str]) -> dict[str, tuple[torch.Tensor | GroupQuantized, torch.Tensor]]:
    try:
        path = demo_model_path()
    except CheckpointError as exc:
        pytest.skip(str(exc))
    f = GGUFFile(path)
    out: dict[str, tuple[torch.Tensor | GroupQuantized, torch.Tensor]] = {}
    for (name, parts), (_, dense) in zip(f.tensors(keep_4bit=True), f.tensors(), strict=True):
        if name in names:
            out[name] = (parts, dense)
        if len(out) == len(names):
            break
    return out


def test_int4_repack_of_demo_tensors_is_the_files_own_weights() -> None:
    # attn_q/attn_k rows are un-permuted at load (llama), the others are not; all are Q4_1
    names = {
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.1.mlp.gate_proj.weight",
    }
    for name, (parts, dense) in _demo_tensors(names).items():
        assert isinstance(parts, GroupQuantized), name
        torch.testing.assert_close(
            parts.dequantize(), dense, atol=0, rtol=0
        )  # same rows, same values
        layer = Int4Linear(parts)
        got = _columns(layer, dense.shape[1])
        # only bfloat16 rounding of scale, zero and output apart from the file's weights
        torch.testing.assert_close(
            got, dense, rtol=BF16_RTOL, atol=float(dense.abs().max()) * 2**-8
        )
        x = torch.randn(8, dense.shape[1], generator=torch.Generator().manual_seed(0))
        ref = F.linear(x, dense)
        err = (layer(x) - ref).norm() / ref.norm()
        bf16_err = (Bf16Linear(dense)(x) - ref).norm() / ref.norm()
        assert err < 1e-2 and err < 3 * bf16_err, (name, float(err), float(bf16_err))


def test_rounding_to_4bit_stays_within_half_a_step() -> None:
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    parts = round_to_4bit(w)
    step = parts.scale.repeat_interleave(32, dim=1)
    assert int(parts.q.max()) <= 15 and bool(
        ((parts.dequantize() - w).abs() <= step / 2 + 1e-6).all()
    )
    torch.testing.assert_close(
        _columns(Int4Linear(parts), 64), parts.dequantize(), rtol=BF16_RTOL, atol=0.02
    )


def test_int8_linear_is_per_channel_symmetric() -> None:
    w = torch.randn(48, 96, generator=torch.Generator().manual_seed(2))
    layer = Int8Linear(w)
    assert layer.qweight.dtype == torch.int8 and layer.scales.shape == (48,)
    torch.testing.assert_close(_columns(layer, 96), w, rtol=0, atol=float(w.abs().max()) / 127)


def test_refined_logits_are_exact_where_the_choice_is_made() -> None:
    g = torch.Generator().manual_seed(3)
    weight, hidden = torch.randn(4096, 64, generator=g), torch.randn(16, 64, generator=g)
    ref = F.linear(hidden, weight)
    got = RefinedLogits(weight, k=20)(hidden)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    top = ref.topk(10, dim=-1)  # near the 20th the bf16 order may swap in a neighbour
    torch.testing.assert_close(got.gather(1, top.indices), top.values, rtol=1e-5, atol=1e-5)
    # the tail: bfloat16 rounding only
    torch.testing.assert_close(got, ref, rtol=2**-7, atol=float(ref.abs().max()) * 2**-8)


def _runner(checkpoint, weight_dtype: str = "float32") -> ModelRunner:  # noqa: ANN001
    cfg = EngineConfig(
        model=str(checkpoint.path),
        device="cpu",
        dtype="float32",
        weight_dtype=weight_dtype,
        num_kv_blocks=32,
    )
    return ModelRunner(cfg, checkpoint)


def test_int4_engine_on_a_q4_1_gguf_keeps_its_4bit_weights(
    tmp_path: Path, tiny_checkpoint: Callable[..., Path]
) -> None:
    gguf = GGUFCheckpoint(write_gguf(tiny_checkpoint("llama"), tmp_path / "q41.gguf", qtype="Q4_1"))
    ref, q4 = _runner(gguf), _runner(gguf, "int4")
    layers = dict(q4.model.named_modules())
    # every decoder linear is int4; logits come from the (untied) float32 projection, refined
    assert [n for n, m in layers.items() if isinstance(m, Linear)] == ["lm_head"]
    assert isinstance(layers["model.layers.0.self_attn.qkv_proj"], Int4Linear)
    assert isinstance(q4.model.logits_head, RefinedLogits)
    assert q4.model.logits_head.weight is q4.model.lm_head.weight
    # the packed q/k/v and gate/up weights are the dequantized file's, shard by shard
    dense = dict(ref.model.named_parameters())
    for name in ("model.layers.0.self_attn.qkv_proj", "model.layers.1.mlp.gate_up_proj"):
        w = dense[f"{name}.weight"]
        torch.testing.assert_close(
            _columns(layers[name], w.shape[1]), w, rtol=BF16_RTOL, atol=float(w.abs().max()) * 2**-8
        )
    a, b = ref.prefill_logits(PROMPT), q4.prefill_logits(PROMPT)
    assert (a - b).abs().max() < 0.06 * a.abs().max()  # measured 3.7%: bf16 activations
    assert "linear weights int4" in q4.describe()


@pytest.mark.parametrize("weight_dtype", ["bfloat16", "int8", "int4"])
def test_quantized_weights_on_a_safetensors_checkpoint(
    weight_dtype: str, tiny_checkpoint: Callable[..., Path]
) -> None:
    ckpt = HFCheckpoint(tiny_checkpoint("qwen2"))  # q/k/v bias: added in float32 after the matmul
    ref, q = _runner(ckpt), _runner(ckpt, weight_dtype)
    kind = {"bfloat16": Bf16Linear, "int8": Int8Linear, "int4": Int4Linear}[weight_dtype]
    assert isinstance(q.model.get_submodule("model.layers.1.mlp.down_proj"), kind)
    if weight_dtype == "int4":  # rounded to 4 bits (lossy): compare with those weights in float32
        with torch.no_grad():
            for m in ref.model.modules():
                if isinstance(m, Linear) and m is not ref.model.lm_head:
                    m.weight.copy_(round_to_4bit(m.weight).dequantize())
    a, b = ref.prefill_logits(PROMPT), q.prefill_logits(PROMPT)
    assert b.dtype == torch.float32
    assert (a - b).abs().max() < 0.06 * a.abs().max()  # measured 1.7-3.2%: bf16 activations


CPU = torch.device("cpu")


def test_auto_weight_dtype_rule() -> None:
    def rule(requested: str = "auto", **kw: object) -> str | None:
        args: dict = {"gguf": True, "device": CPU, "dtype": torch.float32, "native_bf16": True}
        return resolve_weight_dtype(requested, **(args | kw))[0]

    # auto: bfloat16 only for a GGUF in float32 on a CPU that multiplies bf16 natively
    assert rule() == "bfloat16"
    assert rule(gguf=False) is None  # a safetensors checkpoint keeps its float32 weights
    assert rule(native_bf16=False) is None
    assert rule(device=torch.device("cuda")) is None
    assert rule(dtype=torch.bfloat16) is None  # the weights are bfloat16 already
    # an explicit choice wins, whatever the model and CPU
    assert rule("float32") is None
    assert rule("int4", gguf=False, native_bf16=False) == "int4"
    assert rule("bfloat16", gguf=False) == "bfloat16"
    reason = resolve_weight_dtype(
        "auto", gguf=True, device=CPU, dtype=torch.float32, native_bf16=True
    )[1]
    assert reason == "auto: GGUF on a CPU with native bfloat16 matmul"
    with pytest.raises(QuantizationError, match="pass --dtype float32 as well"):
        rule("float32", dtype=torch.bfloat16)


def test_auto_weight_dtype_in_the_runner_and_its_log_line(
    tmp_path: Path, tiny_checkpoint: Callable[..., Path]
) -> None:
    src = tiny_checkpoint("llama")
    gguf = GGUFCheckpoint(write_gguf(src, tmp_path / "q41.gguf", qtype="Q4_1"))
    native = cpu_has_native_bf16()
    auto = _runner(gguf, "auto")
    if native:  # this CPU (AVX512-BF16 or AMX): the GGUF's linears multiply in bfloat16
        assert auto.weight_swap == "bfloat16"
        assert isinstance(auto.model.get_submodule("model.layers.0.mlp.down_proj"), Bf16Linear)
        assert (
            "linear weights bfloat16 (auto: GGUF on a CPU with native bfloat16 matmul)"
            in auto.describe()
        )
    else:
        assert auto.weight_swap is None
        assert "linear weights float32 (auto: GGUF, but this CPU has no native" in auto.describe()
    pinned = _runner(gguf, "float32")
    assert pinned.weight_swap is None and "linear weights float32 (asked for)" in pinned.describe()
    assert isinstance(pinned.model.get_submodule("model.layers.0.mlp.down_proj"), Linear)
    ckpt = _runner(HFCheckpoint(src), "auto")
    assert ckpt.weight_swap is None
    assert "linear weights float32 (auto: not a GGUF model)" in ckpt.describe()
    assert isinstance(ckpt.model.get_submodule("model.layers.0.mlp.down_proj"), Linear)


def test_unusable_weight_dtypes_are_clear_errors() -> None:
    with pytest.raises(
        ValueError, match="weight_dtype must be one of auto, float32, bfloat16, int8, int4"
    ):
        EngineConfig(model="demo", weight_dtype="int3")
    model = torch.nn.Module()
    model.proj = Linear(40, [64], False, torch.float32, torch.device("cpu"))
    with pytest.raises(QuantizationError, match="in_features divisible by 32; proj is 64 x 40"):
        quantize_model(model, "int8")
    model.proj = Linear(64, [24], False, torch.float32, torch.device("cpu"))
    with pytest.raises(QuantizationError, match="out_features by 16; proj is 24 x 64"):
        quantize_model(model, "int4")
    with pytest.raises(QuantizationError, match="'fp8' is not one of"):
        quantize_model(model, "fp8")


@pytest.mark.slow
def test_int4_demo_engine_agrees_with_float32_greedy() -> None:
    """Free-running greedy text diverges wherever the demo's top two logits are closer than
    bfloat16 activations can tell apart, so the check is teacher-forced: along float32's own
    greedy continuations, int4 must pick float32's next token almost everywhere (measured
    98.4% over 12 prompts x 48 tokens) and answer the demo question word for word."""
    from local_engine.engine.llm_engine import LLMEngine
    from local_engine.sampling_params import SamplingParams

    try:
        demo_model_path()
    except CheckpointError as exc:
        pytest.skip(str(exc))
    engines = {
        wd: LLMEngine(
            EngineConfig(
                model="demo", device="cpu", dtype="float32", weight_dtype=wd, num_kv_blocks=64
            )
        )
        for wd in ("float32", "int4")
    }
    tok = engines["float32"].tokenizer
    questions = [
        "What is the capital of France?",
        "What is 12 + 7?",
        "Write a haiku about the sea.",
        "Name three colours.",
    ]
    prompts = [
        tok.encode(tok.apply_chat_template([{"role": "user", "content": q}])) for q in questions
    ]
    greedy = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
    ref = engines["float32"].generate(prompts, greedy)
    got = engines["int4"].generate(prompts[:1], SamplingParams(max_tokens=16, temperature=0))
    assert tok.decode(got[0]) == "The capital of France is Paris."
    agree = total = 0
    for prompt, out in zip(prompts, ref, strict=True):
        seq = prompt + out
        picks = {
            wd: e.runner.prefill_logits(seq)[len(prompt) - 1 : -1].argmax(-1)
            for wd, e in engines.items()
        }
        agree += int((picks["float32"] == picks["int4"]).sum())
        total += len(out)
    assert agree >= 0.9 * total, f"int4 picked float32's token at {agree} of {total} positions"


def test_cli_flags_reach_the_engine_config(capsys: pytest.CaptureFixture[str]) -> None:
    from local_engine.cli import build_parser, engine_config_from_args

    args = build_parser().parse_args(
        ["serve", "--model", "demo", "--weight-dtype", "int4", "--cpu-threads", "2"]
    )
    cfg = engine_config_from_args(args)
    assert (cfg.weight_dtype, cfg.cpu_threads) == ("int4", 2)
    assert (
        engine_config_from_args(
            build_parser().parse_args(["serve", "--model", "demo"])
        ).weight_dtype
        == "auto"
    )
    pinned = build_parser().parse_args(["serve", "--model", "demo", "--weight-dtype", "float32"])
    assert engine_config_from_args(pinned).weight_dtype == "float32"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--model", "demo", "--weight-dtype", "int2"])
    assert "invalid choice: 'int2'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cpu_threads must be >= 1"):
        EngineConfig(model="demo", cpu_threads=0)
