"""GGUF models: dequantization against gguf's reference kernels, a converted tiny checkpoint that
serves the same logits as its safetensors original, the tokenizer from metadata, clear errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import dequantize as reference_dequantize

from local_engine.checkpoint import GGUFCheckpoint, HFCheckpoint, open_checkpoint
from local_engine.config import EngineConfig
from local_engine.engine.model_runner import ModelRunner
from local_engine.gguf_checkpoint import GGUFError, hf_tensor_name
from local_engine.gguf_quants import dequantize, unpack_4bit
from local_engine.loader import CheckpointError
from local_engine.tokenizer import Tokenizer

from .gguf_files import random_blocks, write_gguf

PROMPT = [3, 14, 15, 92, 65, 35, 8, 9, 79]
TEXTS = [
    "Hello world, the sea and the wind.",
    "def add(a, b): return a + b",
    "  spaced\n\nlines 42",
]


def _runner(checkpoint) -> ModelRunner:  # noqa: ANN001 - HFCheckpoint or GGUFCheckpoint
    # float32 weights pinned: auto would multiply a GGUF's weights in bfloat16 on a bf16 CPU
    cfg = EngineConfig(
        model=str(checkpoint.path),
        device="cpu",
        dtype="float32",
        weight_dtype="float32",
        num_kv_blocks=32,
    )
    return ModelRunner(cfg, checkpoint)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K", "Q5_K", "F16", "BF16"])
def test_dequantize_matches_gguf_reference(qtype: str) -> None:
    rows, cols = 6, 512
    if qtype in ("F16", "BF16"):
        data = np.random.default_rng(1).standard_normal((rows, cols)).astype(np.float32)
        data = reference_quantize(data, qtype)
    else:
        data = random_blocks(qtype, rows, cols)
    ours = dequantize(data, qtype, (rows, cols))
    ref = np.asarray(reference_dequantize(data, GGMLQuantizationType[qtype]), dtype=np.float32)
    assert ours.dtype == torch.float32 and ours.shape == (rows, cols)
    torch.testing.assert_close(ours, torch.from_numpy(ref.reshape(rows, cols)), atol=0, rtol=0)


def reference_quantize(data: np.ndarray, qtype: str) -> np.ndarray:
    from gguf.quants import quantize

    return quantize(data, GGMLQuantizationType[qtype])


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q4_K"])
def test_4bit_parts_rebuild_the_weights(qtype: str) -> None:
    data = random_blocks(qtype, 4, 256, seed=2)
    q, scale, offset = unpack_4bit(data, qtype, 256)
    assert q.dtype == torch.uint8 and int(q.max()) <= 15 and scale.shape == (4, 8)
    rebuilt = (q.view(4, 8, 32).float() * scale[..., None] + offset[..., None]).view(4, 256)
    ref = reference_dequantize(data, GGMLQuantizationType[qtype])
    torch.testing.assert_close(rebuilt, torch.from_numpy(np.asarray(ref)), atol=0, rtol=0)


def test_tensor_names_are_mapped_as_data() -> None:
    assert hf_tensor_name("blk.3.attn_q.weight") == "model.layers.3.self_attn.q_proj.weight"
    assert hf_tensor_name("blk.0.attn_q.bias") == "model.layers.0.self_attn.q_proj.bias"
    assert hf_tensor_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_tensor_name("output.weight") == "lm_head.weight"
    with pytest.raises(GGUFError, match="ffn_gate_exps"):
        hf_tensor_name("blk.0.ffn_gate_exps.weight")


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_f32_gguf_serves_the_same_logits_as_its_safetensors_original(
    arch: str, tmp_path: Path, tiny_checkpoint: Callable[..., Path]
) -> None:
    # llama: q/k rows permuted by the converter and put back at load; qwen2: q/k/v bias, tied
    # embeddings; qwen3: q/k norms
    src = tiny_checkpoint(arch)
    gguf = GGUFCheckpoint(write_gguf(src, tmp_path / f"{arch}.gguf"))
    assert gguf.hf_config["model_type"] == arch
    torch.testing.assert_close(
        _runner(gguf).prefill_logits(PROMPT),
        _runner(HFCheckpoint(src)).prefill_logits(PROMPT),
        atol=1e-5,
        rtol=1e-5,
    )


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_1"])
def test_quantized_gguf_serves_its_dequantized_weights(
    qtype: str, tmp_path: Path, tiny_checkpoint: Callable[..., Path]
) -> None:
    src = tiny_checkpoint("llama")
    gguf = GGUFCheckpoint(write_gguf(src, tmp_path / f"llama-{qtype}.gguf", qtype=qtype))
    # the reference: the same weights quantized and dequantized by gguf, loaded from safetensors
    from safetensors.torch import load_file, save_file

    from .gguf_files import gguf_name, permute

    ref_dir = Path(shutil.copytree(src, tmp_path / "ref"))
    tensors = {}
    for f in src.glob("*.safetensors"):
        tensors.update(load_file(f))
    cfg = json.loads((src / "config.json").read_text())
    heads = {"attn_q": cfg["num_attention_heads"], "attn_k": cfg["num_key_value_heads"]}
    for name, t in tensors.items():
        if t.dim() == 2:
            kind = gguf_name(name).split(".")[-2]
            q = GGMLQuantizationType[qtype]
            from gguf.quants import quantize

            perm = permute(t.float(), heads[kind]) if kind in heads else t.float()
            deq = torch.from_numpy(np.asarray(reference_dequantize(quantize(perm.numpy(), q), q)))
            if kind in heads:  # undo the permutation in the reference, as a reader of HF names
                half = deq.shape[0] // heads[kind] // 2
                deq = deq.reshape(heads[kind], half, 2, -1).transpose(1, 2).reshape(deq.shape)
            tensors[name] = deq.to(t.dtype)
    for f in ref_dir.glob("*.safetensors"):
        f.unlink()
    save_file(tensors, str(ref_dir / "model.safetensors"))
    torch.testing.assert_close(
        _runner(gguf).prefill_logits(PROMPT),
        _runner(HFCheckpoint(ref_dir)).prefill_logits(PROMPT),
        atol=1e-4,
        rtol=1e-4,
    )


def test_tokenizer_and_chat_template_come_from_the_metadata(
    tmp_path: Path, tiny_checkpoint: Callable[..., Path]
) -> None:
    src = tiny_checkpoint("qwen2")
    (tmp_path / "only").mkdir()  # no tokenizer.json beside the file: the metadata is used
    path = write_gguf(src, tmp_path / "only" / "model.gguf")
    ours, hf = GGUFCheckpoint(path).tokenizer(), Tokenizer.from_dir(src)
    for text in TEXTS:
        assert ours.encode(text) == hf.encode(text)
        assert ours.decode(hf.encode(text)) == text
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    rendered = ours.apply_chat_template(chat)
    assert rendered == hf.apply_chat_template(chat)
    assert ours.encode(rendered) == hf.encode(rendered)  # chat markup stays whole special tokens
    assert ours.eos_token_ids <= hf.eos_token_ids and ours.eos_token_ids


def test_tokenizer_json_beside_the_file_wins(
    tmp_path: Path, tiny_checkpoint: Callable[..., Path]
) -> None:
    src = tiny_checkpoint("qwen2")
    folder = tmp_path / "with-hf-files"
    folder.mkdir()
    path = write_gguf(src, folder / "model.gguf", tokenizer=False)
    with pytest.raises(GGUFError, match="tokenizer"):
        GGUFCheckpoint(path).tokenizer()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, folder / name)
    assert GGUFCheckpoint(path).tokenizer().encode(TEXTS[0]) == Tokenizer.from_dir(src).encode(
        TEXTS[0]
    )


def test_unsupported_architecture_and_tensor_type_are_clear_errors(tmp_path: Path) -> None:
    w = GGUFWriter(str(tmp_path / "gemma.gguf"), "gemma")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    for step in (w.write_header_to_file, w.write_kv_data_to_file, w.write_tensors_to_file, w.close):
        step()
    with pytest.raises(GGUFError, match="architecture 'gemma' is not supported"):
        open_checkpoint(str(tmp_path / "gemma.gguf"))
    w = GGUFWriter(str(tmp_path / "int.gguf"), "llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.int32))
    for step in (w.write_header_to_file, w.write_kv_data_to_file, w.write_tensors_to_file, w.close):
        step()
    with pytest.raises(GGUFError, match=r"tensor types not supported: I32 \(token_embd.weight\)"):
        open_checkpoint(str(tmp_path / "int.gguf"))
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(GGUFError, match="cannot read"):
        open_checkpoint(str(tmp_path / "junk.gguf"))
    with pytest.raises(CheckpointError, match="does not exist"):
        open_checkpoint(str(tmp_path / "missing.gguf"))
