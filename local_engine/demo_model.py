"""Build a small random checkpoint in the Hugging Face layout (config, safetensors, tokenizer).

Used by ``local-engine make-demo-model`` and by the tests: the files are what transformers and
the Hub use, so transformers can load the same directory as a reference. The tokenizer is a
byte-level BPE trained with ``tokenizers`` on a built-in text; the chat template is ChatML
with Hermes-style tools. Weights are drawn from a seeded generator, so a build is reproducible.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = ["ARCH_PRESETS", "build_tiny_checkpoint"]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"]
DEFAULT_TOKENIZER_VOCAB = 512
# larger than the usual init so random models (tied embeddings too) still produce varied greedy text
WEIGHT_GAIN = 2.0  # linear weights: std = gain / sqrt(fan_in)
EMBED_STD = 0.3
NORM_STD = 0.1  # norm weights: 1 + noise, so a norm loaded wrongly shows in the outputs
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_COMMON: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
    "use_cache": True,
}
# arch name -> config.json fields on top of _COMMON (data, not code paths)
ARCH_PRESETS: dict[str, dict[str, Any]] = {
    "llama": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "mlp_bias": False,
    },
    "llama3": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "mlp_bias": False,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
    },
    "mistral": {
        "model_type": "mistral",
        "architectures": ["MistralForCausalLM"],
        "sliding_window": 4096,
    },
    "qwen2": {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "sliding_window": None,
    },
    "qwen3": {
        "model_type": "qwen3",
        "architectures": ["Qwen3ForCausalLM"],
        "tie_word_embeddings": True,
        "attention_bias": False,
        "use_sliding_window": False,
        "sliding_window": None,
    },
}
EXTRA_OVERRIDES = {
    "vocab_size",
    "head_dim",
    "sliding_window",
    "rope_scaling",
    "attention_bias",
    "mlp_bias",
}

CHAT_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n"
    "{%- if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "# Tools\n\nYou may call functions. Signatures:\n<tools>"
    "{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}\n</tools>\n"
    'Return each call as <tool_call>{"name": ..., "arguments": {...}}</tool_call><|im_end|>\n'
    "{%- elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n"
    "{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role != 'system' or not loop.first %}"
    "<|im_start|>{{ m.role }}\n{{ m.content or '' }}"
    "{%- for call in m.tool_calls or [] %}{% set f = call.function if call.function is defined else call %}"
    '\n<tool_call>{"name": "{{ f.name }}", "arguments": {{ f.arguments | tojson }}}</tool_call>'
    "{%- endfor %}<|im_end|>\n"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = """\
A router sends each request to the model that can answer it well for the least cost. Small open
models run on our own machines; large proprietary models answer the hard questions. The engine
keeps a paged cache of keys and values, so many requests share the memory without waste, and a
scheduler adds new requests to the running batch at every step. Prefill reads the prompt, decode
writes one token at a time. The quick brown fox jumps over the lazy dog while the cat sleeps.
What is the capital of France? Paris is the capital of France, and Berlin is the capital of
Germany. Please write a short poem about the sea, the wind and the rain. def add(a, b): return a + b
for i in range(10): print(i * i) {"name": "get_weather", "arguments": {"city": "London"}}
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14 2.71. Hello, world! How are you today? I am fine.
"""


def _train_tokenizer(vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    return tok


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _config(
    arch: str, vocab: int, overrides: dict[str, Any], ids: dict[str, int], dtype: str
) -> dict[str, Any]:
    if arch not in ARCH_PRESETS:
        raise ValueError(f"unknown arch {arch!r} (known: {', '.join(ARCH_PRESETS)})")
    cfg = {**_COMMON, **ARCH_PRESETS[arch]}
    unknown = set(overrides) - set(cfg) - EXTRA_OVERRIDES
    if unknown:
        raise ValueError(f"unknown config overrides: {', '.join(sorted(unknown))}")
    cfg.update(overrides)
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    cfg["vocab_size"] = max(int(cfg.get("vocab_size") or 0), vocab)
    cfg.update(bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    cfg["torch_dtype"] = dtype
    return cfg


def _weights(cfg: dict[str, Any], seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    h, inter, d = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    qkv_bias = cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False)
    o_bias = cfg["model_type"] == "llama" and cfg.get("attention_bias", False)

    def rand(*shape: int, mean: float = 0.0, std: float | None = None) -> torch.Tensor:
        std = WEIGHT_GAIN / shape[-1] ** 0.5 if std is None else std
        return (torch.randn(*shape, generator=gen) * std + mean).to(dtype)

    def norm(dim: int) -> torch.Tensor:
        return rand(dim, mean=1.0, std=NORM_STD)

    w: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": rand(cfg["vocab_size"], h, std=EMBED_STD)
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name, shape in (
            ("q_proj", (q, h)),
            ("k_proj", (kv, h)),
            ("v_proj", (kv, h)),
            ("o_proj", (h, q)),
        ):
            w[f"{p}self_attn.{name}.weight"] = rand(*shape)
        if qkv_bias:
            for name, size in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
                w[f"{p}self_attn.{name}.bias"] = rand(size, std=NORM_STD)
        if o_bias:
            w[f"{p}self_attn.o_proj.bias"] = rand(h, std=NORM_STD)
        if cfg["model_type"] == "qwen3":
            w[f"{p}self_attn.q_norm.weight"] = norm(d)
            w[f"{p}self_attn.k_norm.weight"] = norm(d)
        w[f"{p}mlp.gate_proj.weight"] = rand(inter, h)
        w[f"{p}mlp.up_proj.weight"] = rand(inter, h)
        w[f"{p}mlp.down_proj.weight"] = rand(h, inter)
        if cfg.get("mlp_bias", False):
            for name, size in (("gate_proj", inter), ("up_proj", inter), ("down_proj", h)):
                w[f"{p}mlp.{name}.bias"] = rand(size, std=NORM_STD)
        w[f"{p}input_layernorm.weight"] = norm(h)
        w[f"{p}post_attention_layernorm.weight"] = norm(h)
    w["model.norm.weight"] = norm(h)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = rand(cfg["vocab_size"], h)
    return w


def _save_weights(out: Path, weights: dict[str, torch.Tensor], num_shards: int) -> None:
    if num_shards == 1:
        save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
        return
    names = list(weights)
    weight_map: dict[str, str] = {}
    for s in range(num_shards):
        file = f"model-{s + 1:05d}-of-{num_shards:05d}.safetensors"
        shard = {n: weights[n] for n in names[s::num_shards]}
        save_file(shard, out / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
    total = sum(t.numel() * t.element_size() for t in weights.values())
    _write_json(
        out / "model.safetensors.index.json",
        {"metadata": {"total_size": total}, "weight_map": weight_map},
    )


def _save_tokenizer(out: Path, tok: Tokenizer, cfg: dict[str, Any]) -> None:
    tok.save(str(out / "tokenizer.json"))
    added = {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    }
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "unk_token": None,
            "added_tokens_decoder": added,
            "model_max_length": cfg["max_position_embeddings"],
            "clean_up_tokenization_spaces": False,
            "chat_template": CHAT_TEMPLATE,
        },
    )


def build_tiny_checkpoint(
    out_dir: Path | str,
    arch: str = "qwen2",
    *,
    seed: int = 0,
    num_shards: int = 1,
    dtype: str = "float32",
    tokenizer_vocab_size: int = DEFAULT_TOKENIZER_VOCAB,
    **overrides: Any,
) -> Path:
    """Write a random ``arch`` checkpoint into ``out_dir``; ``overrides`` are config.json fields."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
    if num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _train_tokenizer(tokenizer_vocab_size)
    ids: dict[str, int] = {}
    for t in SPECIAL_TOKENS:
        token_id = tok.token_to_id(t)
        if token_id is None:  # the trainer adds every special token; this would be a bug
            raise ValueError(f"the demo tokenizer lacks {t!r}")
        ids[t] = token_id
    cfg = _config(arch, tok.get_vocab_size(), overrides, ids, dtype)
    _write_json(out / "config.json", cfg)
    eos = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    _write_json(
        out / "generation_config.json", {"eos_token_id": eos, "pad_token_id": ids["<|endoftext|>"]}
    )
    _save_weights(out, _weights(cfg, seed, DTYPES[dtype]), num_shards)
    _save_tokenizer(out, tok, cfg)
    return out
