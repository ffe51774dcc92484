"""Read a llama.cpp / Ollama GGUF file as a checkpoint: its config, its tensors, its tokenizer.

The file is read with ``gguf`` (llama.cpp's own Python reader) and memory-mapped. What the
engine needs is translated by tables, not code paths:

- ``CONFIG_KEYS``: ``{arch}.*`` metadata -> the ``config.json`` fields ``DecoderArgs`` reads;
- ``GLOBAL_TENSORS`` / ``LAYER_TENSORS``: GGUF tensor names -> Hugging Face names, which
  ``models/weights.py`` then maps onto our packed modules like any safetensors checkpoint;
- ``DEQUANTIZABLE``: the tensor types we load (dequantized to float32 by gguf's own kernels;
  ``load_weights`` casts them to the engine's dtype; gguf_quants.py). Anything else is a ``GGUFError`` naming it.

llama-architecture files store the q and k rows permuted for llama.cpp's interleaved RoPE;
``_unpermute`` puts them back in the rotate-half order our decoder (and transformers) use.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from local_engine.errors import EngineError
from local_engine.gguf_quants import GroupQuantized

__all__ = [
    "DEQUANTIZABLE",
    "GGUFError",
    "GGUFFile",
    "hf_tensor_name",
]


class GGUFError(EngineError, ValueError):
    """The GGUF file cannot be served: unreadable, or an architecture/type/tensor we do not support."""


# GGUF general.architecture -> config.json model_type (models/registry.py)
ARCH_MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
# architectures whose converter permuted q/k rows for llama.cpp's interleaved rope
PERMUTED_QK_ARCHS = frozenset({"llama"})

# "{arch}.<key>" -> config.json field
CONFIG_KEYS = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "attention.key_length": "head_dim",
    "rope.freq_base": "rope_theta",
    "vocab_size": "vocab_size",
}
ROPE_SCALING_TYPES = {"none": None, "linear": "linear"}

GLOBAL_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# GGML type names we dequantize (the K-quants included); IQ*, TQ* and the FP4s are refused
DEQUANTIZABLE = frozenset(
    {
        "F32",
        "F16",
        "BF16",
        "Q4_0",
        "Q4_1",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
    }
)


def hf_tensor_name(name: str) -> str:
    """GGUF tensor name -> Hugging Face name (``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``)."""
    base, _, suffix = name.rpartition(".")
    if base in GLOBAL_TENSORS:
        return f"{GLOBAL_TENSORS[base]}.{suffix}"
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in LAYER_TENSORS:
        return f"model.layers.{parts[1]}.{LAYER_TENSORS[parts[2]]}.{suffix}"
    raise GGUFError(f"tensor {name!r} has no counterpart in the decoder (unsupported model layout)")


def _unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    # rows of each head were interleaved (x0, x_{d/2}, x1, ...); back to halves [x0..x_{d/2-1}, ...]
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class GGUFFile:
    """One GGUF file, opened once; ``hf_config``, ``tensors()`` and ``metadata`` read from it."""

    def __init__(self, path: Path) -> None:
        from gguf import GGUFReader  # the gguf package is only needed for GGUF models

        self.path = path
        try:
            self._reader = GGUFReader(str(path))
        except (OSError, ValueError) as exc:
            raise GGUFError(f"cannot read {path} as GGUF: {exc}") from exc
        self.metadata: dict[str, Any] = {
            name: _scalar(field.contents()) for name, field in self._reader.fields.items()
        }
        self.arch = str(self.metadata.get("general.architecture", ""))
        if self.arch not in ARCH_MODEL_TYPES:
            raise GGUFError(
                f"{path.name}: architecture {self.arch!r} is not supported "
                f"(supported: {', '.join(sorted(ARCH_MODEL_TYPES))})"
            )
        self._check_types()
        self.hf_config = self._hf_config()

    @property
    def file_type(self) -> str:
        """The weight types present, most common first (``Q4_1+F32+Q8_0``), for logs."""
        counts: dict[str, int] = {}
        for t in self._reader.tensors:
            counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
        return "+".join(sorted(counts, key=lambda k: -counts[k]))

    def _check_types(self) -> None:
        bad = sorted(
            {
                f"{t.tensor_type.name} ({t.name})"
                for t in self._reader.tensors
                if t.tensor_type.name not in DEQUANTIZABLE
            }
        )
        if bad:
            raise GGUFError(
                f"{self.path.name}: tensor types not supported: {', '.join(bad[:4])}"
                f"{' ...' if len(bad) > 4 else ''} (supported: {', '.join(sorted(DEQUANTIZABLE))})"
            )

    def _hf_config(self) -> dict[str, Any]:
        md, arch = self.metadata, self.arch
        cfg: dict[str, Any] = {"model_type": ARCH_MODEL_TYPES[arch], "hidden_act": "silu"}
        for key, field in CONFIG_KEYS.items():
            if f"{arch}.{key}" in md:
                cfg[field] = md[f"{arch}.{key}"]
        if "vocab_size" not in cfg and "tokenizer.ggml.tokens" in md:
            cfg["vocab_size"] = len(md["tokenizer.ggml.tokens"])
        names = {t.name for t in self._reader.tensors}
        if "rope_freqs.weight" in names:
            raise GGUFError(
                f"{self.path.name}: per-frequency RoPE factors (rope_freqs, Llama 3.1 style) are not supported"
            )
        cfg["tie_word_embeddings"] = "output.weight" not in names
        cfg["attention_bias"] = "blk.0.attn_q.bias" in names
        scaling = str(md.get(f"{arch}.rope.scaling.type", "none"))
        if scaling not in ROPE_SCALING_TYPES:
            raise GGUFError(f"{self.path.name}: rope scaling {scaling!r} is not supported")
        if ROPE_SCALING_TYPES[scaling] is not None:
            cfg["rope_scaling"] = {
                "rope_type": ROPE_SCALING_TYPES[scaling],
                "factor": float(md[f"{arch}.rope.scaling.factor"]),
            }
        for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.bos_token_id"):
            if key in md:
                cfg[key.rsplit(".", 1)[1]] = int(md[key])
        return cfg

    def tensors(
        self, keep_4bit: bool = False
    ) -> Iterator[tuple[str, torch.Tensor | GroupQuantized]]:
        """Yield ``(hf_name, float32 tensor)`` for every tensor, dequantized one at a time; with
        ``keep_4bit`` the 2-D Q4_0/Q4_1/Q4_K tensors come as their ``GroupQuantized`` parts."""
        from local_engine.gguf_quants import FOUR_BIT_TYPES, dequantize, unpack_4bit

        permute = self.arch in PERMUTED_QK_ARCHS
        heads = {
            "attn_q": int(self.hf_config["num_attention_heads"]),
            "attn_k": int(self.hf_config.get("num_key_value_heads") or 0)
            or int(self.hf_config["num_attention_heads"]),
        }
        # element-wise unpacking of ~1 MB tensors gains nothing from threads, and on a busy
        # machine OpenMP barriers made it 100x slower (40 s instead of 0.4 s for the demo model)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for t in self._reader.tensors:
                name = hf_tensor_name(t.name)
                # gguf lists shapes innermost first
                shape = tuple(int(d) for d in reversed(t.shape))
                qtype = t.tensor_type.name
                kind = t.name.split(".")[-2]
                w: torch.Tensor | GroupQuantized
                if keep_4bit and qtype in FOUR_BIT_TYPES and len(shape) == 2:
                    w = GroupQuantized(*unpack_4bit(t.data, qtype, shape[-1]))
                    if permute and kind in heads:
                        w = w.map_rows(partial(_unpermute, n_head=heads[kind]))
                else:
                    w = dequantize(t.data, qtype, shape)
                    if permute and kind in heads:
                        w = _unpermute(w, heads[kind])
                yield name, w
        finally:
            torch.set_num_threads(threads)
