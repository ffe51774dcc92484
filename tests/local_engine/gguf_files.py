"""Write small GGUF files from the tiny Hugging Face checkpoints, as llama.cpp's converter does.

``write_gguf`` renames tensors to GGUF names, permutes llama q/k rows for interleaved RoPE (the
converter's ``permute``), quantizes 2-D weights to the asked type with gguf's own quantizer, and
stores the byte-level BPE tokenizer (vocabulary, merges, token types, chat template) as metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize
from safetensors.torch import load_file

HF_TO_GGUF = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
GLOBALS = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def gguf_name(hf: str) -> str:
    base, suffix = hf.rsplit(".", 1)
    if base in GLOBALS:
        return f"{GLOBALS[base]}.{suffix}"
    _, _, layer, rest = base.split(".", 3)
    return f"blk.{layer}.{HF_TO_GGUF[rest]}.{suffix}"


def permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    # convert_hf_to_gguf.LlamaModel.permute: halves -> interleaved pairs per head
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_gguf(
    model_dir: Path, out: Path, qtype: str = "F32", arch: str | None = None, tokenizer: bool = True
) -> Path:
    cfg = json.loads((model_dir / "config.json").read_text())
    arch = arch or cfg["model_type"]
    w = GGUFWriter(str(out), arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"])
    if "head_dim" in cfg:
        w.add_key_length(cfg["head_dim"])
    if tokenizer:
        _add_tokenizer(w, model_dir, cfg)
    heads = {"attn_q": cfg["num_attention_heads"], "attn_k": cfg["num_key_value_heads"]}
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(f))
    for name, t in tensors.items():
        g = gguf_name(name)
        t = t.float()
        kind = g.split(".")[-2]
        if arch == "llama" and kind in heads:
            t = permute(t, heads[kind])
        arr = t.numpy()
        if t.dim() == 2 and qtype != "F32":
            q = GGMLQuantizationType[qtype]
            w.add_tensor(g, quantize(arr, q), raw_dtype=q)
        else:
            w.add_tensor(g, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def _add_tokenizer(w: GGUFWriter, model_dir: Path, cfg: dict) -> None:
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {a["content"] for a in tok["added_tokens"] if a["special"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types([3 if t in special else 1 for t in tokens])
    tcfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    w.add_eos_token_id(vocab[tcfg["eos_token"]])
    if tcfg.get("bos_token"):
        w.add_bos_token_id(vocab[tcfg["bos_token"]])
    w.add_chat_template(tcfg["chat_template"])
    w.add_vocab_size(cfg["vocab_size"])


def random_blocks(qtype: str, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Random bytes in ``qtype``'s block layout with finite f16 scales (any bit pattern of the
    quants is a valid block)."""
    from gguf.constants import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    halves = (rng.standard_normal((rows, cols // block, 2)) * 0.05).astype(np.float16)
    offsets = {"Q4_0": [0], "Q4_1": [0, 2], "Q8_0": [0], "Q4_K": [0, 2], "Q6_K": [size - 2]}
    for i, off in enumerate(offsets.get(qtype, [])):
        raw[..., off : off + 2] = halves[..., i : i + 1].view(np.uint8)
    return raw.reshape(rows, -1)
