"""One decoder for Llama 2/3/3.1, Mistral, Qwen2/2.5 and Qwen3 (pre-norm, GQA, SwiGLU, RoPE).

Module names mirror the Hugging Face checkpoints (``model.layers.N.self_attn...``) except for the
packed ``qkv_proj`` and ``gate_up_proj``; ``models/weights.py`` maps the checkpoint onto them.
The model works on a flat batch of tokens ``[T]`` described by ``AttentionMetadata``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from local_engine.layers.attention import AttentionMetadata, PagedAttention
from local_engine.layers.linear import (
    Linear,
    default_weight_loader,
    qkv_linear,
    set_weight_loader,
)
from local_engine.layers.rmsnorm import RMSNorm
from local_engine.layers.rotary import RotaryEmbedding, apply_rotary
from local_engine.models.decoder_args import DecoderArgs

RopeCosSin = tuple[
    torch.Tensor, torch.Tensor
]  # cos, sin: [T, 1, head_dim / 2], computed once per step


class DecoderAttention(nn.Module):
    def __init__(self, a: DecoderArgs, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.q_size, self.kv_size = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = a.num_heads, a.num_kv_heads, a.head_dim
        self.qkv_proj = qkv_linear(
            a.hidden_size, a.num_heads, a.num_kv_heads, a.head_dim, a.qkv_bias, dtype, device
        )
        self.o_proj = Linear(self.q_size, [a.hidden_size], a.o_bias, dtype, device)
        if a.qk_norm:
            self.q_norm = RMSNorm(a.head_dim, a.rms_norm_eps, dtype, device)
            self.k_norm = RMSNorm(a.head_dim, a.rms_norm_eps, dtype, device)
        self.qk_norm = a.qk_norm
        self.attn = PagedAttention(a.num_heads, a.num_kv_heads, a.head_dim)

    def forward(self, rope: RopeCosSin, x: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        # x: [T, hidden]
        t = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(t, self.num_heads, self.head_dim)  # [T, H, D]
        k = k.view(t, self.num_kv_heads, self.head_dim)  # [T, Hkv, D]
        v = v.view(t, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q, k, rope)
        return self.o_proj(self.attn(q, k, v, meta))


class DecoderMLP(nn.Module):
    def __init__(self, a: DecoderArgs, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.gate_up_proj = Linear(
            a.hidden_size, [a.intermediate_size] * 2, a.mlp_bias, dtype, device
        )
        self.down_proj = Linear(a.intermediate_size, [a.hidden_size], a.mlp_bias, dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # [T, I] each
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, a: DecoderArgs, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(a.hidden_size, a.rms_norm_eps, dtype, device)
        self.self_attn = DecoderAttention(a, dtype, device)
        self.post_attention_layernorm = RMSNorm(a.hidden_size, a.rms_norm_eps, dtype, device)
        self.mlp = DecoderMLP(a, dtype, device)

    def forward(self, rope: RopeCosSin, x: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        x = x + self.self_attn(rope, self.input_layernorm(x), meta)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderModel(nn.Module):
    def __init__(
        self, a: DecoderArgs, max_positions: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        super().__init__()
        weight = torch.empty(a.vocab_size, a.hidden_size, dtype=dtype, device=device)
        self.embed_tokens = nn.Embedding(a.vocab_size, a.hidden_size, _weight=weight, _freeze=True)
        set_weight_loader(self.embed_tokens.weight, default_weight_loader)
        self.rotary = RotaryEmbedding(a.head_dim, max_positions, a.rope, device)
        self.layers = nn.ModuleList(DecoderLayer(a, dtype, device) for _ in range(a.num_layers))
        self.norm = RMSNorm(a.hidden_size, a.rms_norm_eps, dtype, device)

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        # input_ids, positions: [T] -> hidden: [T, hidden]
        x = self.embed_tokens(input_ids)
        rope = self.rotary.cos_sin(positions, x.dtype)
        for layer in self.layers:
            x = layer(rope, x, meta)
        return self.norm(x)


class DecoderForCausalLM(nn.Module):
    def __init__(
        self, a: DecoderArgs, max_positions: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        super().__init__()
        self.args = a
        self.model = DecoderModel(a, max_positions, dtype, device)
        if a.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = Linear(a.hidden_size, [a.vocab_size], False, dtype, device)
        # hidden -> fp32 logits in place of the plain projection (layers/quantization.py sets it)
        self.logits_head: nn.Module | None = None

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        return self.model(input_ids, positions, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [N, hidden] -> logits: [N, V] fp32
        if self.logits_head is not None:
            return self.logits_head(hidden)
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(hidden, weight).float()
