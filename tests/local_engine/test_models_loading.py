"""Loading checkpoints: sharded safetensors, config layouts, and clear errors for bad input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from local_engine.checkpoint import HFCheckpoint
from local_engine.config import EngineConfig
from local_engine.demo_model import build_tiny_checkpoint
from local_engine.engine.model_runner import ModelRunner
from local_engine.loader import CheckpointError, resolve_model_dir
from local_engine.models import SUPPORTED_MODEL_TYPES, UnsupportedModelError
from local_engine.models.decoder_args import ModelConfigError
from local_engine.models.weights import WeightLoadError

PROMPT = [3, 14, 15, 92, 65, 35]


def runner_for(model_dir: Path, **kw) -> ModelRunner:
    base = dict(model=str(model_dir), device="cpu", dtype="float32", block_size=4, num_kv_blocks=32)
    return ModelRunner(EngineConfig(**(base | kw)), HFCheckpoint(model_dir))


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(model_dir: Path, **changes) -> None:
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg.update(changes)
    (model_dir / "config.json").write_text(json.dumps(cfg))


def test_sharded_checkpoint_loads_the_same_weights(
    tmp_path: Path, tiny_checkpoint: Callable[..., Path]
) -> None:
    whole = tiny_checkpoint("llama")
    sharded = build_tiny_checkpoint(tmp_path / "sharded", "llama", seed=1, num_shards=3)
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("*.safetensors"))) == 3
    torch.testing.assert_close(
        runner_for(sharded).prefill_logits(PROMPT),
        runner_for(whole).prefill_logits(PROMPT),
        atol=0,
        rtol=0,
    )


def test_transformers4_config_layout_is_read(
    tmp_path: Path, tiny_checkpoint: Callable[..., Path]
) -> None:
    # transformers >= 5 writes rope_parameters; the Hub's checkpoints mostly have rope_theta + rope_scaling
    src = tiny_checkpoint("llama3")
    moved = copy_of(src, tmp_path / "m")
    cfg = json.loads((moved / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_theta": cfg.pop("rope_theta"), **cfg.pop("rope_scaling")}
    (moved / "config.json").write_text(json.dumps(cfg))
    torch.testing.assert_close(
        runner_for(moved).prefill_logits(PROMPT), runner_for(src).prefill_logits(PROMPT)
    )


def test_eos_ids_and_generation_config(tiny_checkpoint: Callable[..., Path]) -> None:
    d = tiny_checkpoint("qwen2")
    runner = runner_for(d)
    gen = json.loads((d / "generation_config.json").read_text())
    assert runner.eos_token_ids == set(gen["eos_token_id"]) and len(runner.eos_token_ids) == 2
    assert runner.generation_config == gen


def test_kv_blocks_from_cpu_bytes(tiny_checkpoint: Callable[..., Path]) -> None:
    d = tiny_checkpoint("qwen2")
    # 2 (k, v) * 2 layers * block 4 * 2 kv heads * 16 dims * 4 bytes = 2048 bytes a block
    runner = runner_for(d, num_kv_blocks=None, cpu_kv_cache_bytes=2048 * 10 + 100)
    assert runner.num_kv_blocks == 10
    assert runner.max_model_len == 40  # lowered to what the cache can hold


def test_bfloat16_on_cpu_runs(tiny_checkpoint: Callable[..., Path]) -> None:
    d = tiny_checkpoint("qwen3")
    ours = runner_for(d, dtype="bfloat16").prefill_logits(PROMPT)
    ref = runner_for(d).prefill_logits(PROMPT)
    assert ours.dtype == torch.float32
    assert (ours.argmax(-1) == ref.argmax(-1)).float().mean() > 0.5


def test_missing_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"\*\.safetensors, tokenizer\.json"):
        resolve_model_dir(str(tmp_path))


def test_not_a_directory_nor_hub_id() -> None:
    with pytest.raises(CheckpointError, match="neither a local directory nor a hub id"):
        resolve_model_dir("/no/such/model/dir")


def test_hub_id_offline_names_the_needed_files(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        CheckpointError,
        match=r"could not be fetched.*config\.json, \*\.safetensors, tokenizer\.json",
    ):
        resolve_model_dir("nobody-here/no-such-model-xyz")


def test_unsupported_model_type(tmp_path: Path, tiny_checkpoint: Callable[..., Path]) -> None:
    d = copy_of(tiny_checkpoint("qwen2"), tmp_path / "m")
    edit_config(d, model_type="gpt2")
    with pytest.raises(UnsupportedModelError, match="gpt2.*" + ", ".join(SUPPORTED_MODEL_TYPES)):
        runner_for(d)


def test_unsupported_rope_type(tmp_path: Path, tiny_checkpoint: Callable[..., Path]) -> None:
    d = copy_of(tiny_checkpoint("llama"), tmp_path / "m")
    edit_config(d, rope_scaling={"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(ModelConfigError, match="rope_type 'yarn'"):
        runner_for(d)


def test_max_model_len_beyond_positions(tiny_checkpoint: Callable[..., Path]) -> None:
    with pytest.raises(ModelConfigError, match="max_model_len"):
        runner_for(tiny_checkpoint("qwen2"), max_model_len=100_000)


def test_wrong_shape_and_missing_tensor(
    tmp_path: Path, tiny_checkpoint: Callable[..., Path]
) -> None:
    d = copy_of(tiny_checkpoint("llama"), tmp_path / "m")
    weights = load_file(d / "model.safetensors")
    weights["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(3, 64)
    save_file(weights, d / "model.safetensors")
    with pytest.raises(WeightLoadError, match=r"k_proj.*\(3, 64\).*\(32, 64\)"):
        runner_for(d)
    del weights["model.layers.0.self_attn.k_proj.weight"]
    save_file(weights, d / "model.safetensors")
    with pytest.raises(WeightLoadError, match="missing.*qkv_proj"):
        runner_for(d)


def test_bad_dtype_name(tiny_checkpoint: Callable[..., Path]) -> None:
    with pytest.raises(ModelConfigError, match="dtype 'float8'"):
        runner_for(tiny_checkpoint("qwen2"), dtype="float8")


@pytest.mark.parametrize(
    ("arch", "overrides"),
    [
        ("llama", {"attention_bias": True, "mlp_bias": True}),  # o_proj and MLP biases too
        ("qwen2", {"tie_word_embeddings": False}),  # Qwen2.5-7B style: separate lm_head
        ("qwen3", {"tie_word_embeddings": False, "head_dim": 32}),  # head_dim != hidden / heads
    ],
)
def test_config_variants_match_transformers(tmp_path: Path, arch: str, overrides: dict) -> None:
    transformers = pytest.importorskip("transformers")
    d = build_tiny_checkpoint(tmp_path / "m", arch, seed=7, **overrides)
    hf = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(torch.tensor([PROMPT])).logits[0]
    torch.testing.assert_close(runner_for(d).prefill_logits(PROMPT), ref, atol=1e-4, rtol=0)
