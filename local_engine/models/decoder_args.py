"""The decoder's shape and options, read once from a Hugging Face ``config.json`` dict.

Both config layouts are understood: transformers >= 5 writes ``rope_parameters``; older
checkpoints (most of the Hub) write ``rope_theta`` and ``rope_scaling``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from local_engine.errors import EngineError
from local_engine.layers.rotary import INV_FREQ_BY_ROPE_TYPE, RopeArgs

DEFAULT_ROPE_THETA = 10000.0
DEFAULT_RMS_NORM_EPS = 1e-6


class ModelConfigError(EngineError, ValueError):
    """config.json is missing a field or asks for something this engine does not implement."""


@dataclass(frozen=True, slots=True)
class ArchFeatures:
    """What distinguishes the supported families; one instance per ``model_type`` (registry)."""

    qkv_bias: bool | None = None  # None: read config["attention_bias"]
    o_bias: bool | None = None  # None: read config["attention_bias"]
    qk_norm: bool = False  # per-head RMSNorm on q and k before rotary (Qwen3)
    sliding_window_key: str | None = None  # config key of a window that applies to every layer


@dataclass(frozen=True, slots=True)
class DecoderArgs:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool
    rope: RopeArgs
    sliding_window: int | None

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], arch: ArchFeatures) -> DecoderArgs:
        required = [
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
        ]
        missing = [k for k in required if k not in cfg]
        if missing:
            raise ModelConfigError(f"config.json lacks {', '.join(missing)}")
        if cfg.get("hidden_act", "silu") != "silu":
            raise ModelConfigError(f"hidden_act {cfg['hidden_act']!r} is not supported (only silu)")
        heads = int(cfg["num_attention_heads"])
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        if heads % kv_heads:
            raise ModelConfigError(
                f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            )
        head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // heads)
        attention_bias = bool(cfg.get("attention_bias", False))
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=int(cfg["hidden_size"]),
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            rms_norm_eps=float(cfg.get("rms_norm_eps", DEFAULT_RMS_NORM_EPS)),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=attention_bias if arch.qkv_bias is None else arch.qkv_bias,
            o_bias=attention_bias if arch.o_bias is None else arch.o_bias,
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            qk_norm=arch.qk_norm,
            rope=_rope_args(cfg),
            sliding_window=_sliding_window(cfg, arch),
        )


def _rope_args(cfg: dict[str, Any]) -> RopeArgs:
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = float(params.pop("rope_theta", cfg.get("rope_theta", DEFAULT_ROPE_THETA)))
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    if rope_type not in INV_FREQ_BY_ROPE_TYPE:
        raise ModelConfigError(
            f"rope_type {rope_type!r} is not supported (supported: {', '.join(sorted(INV_FREQ_BY_ROPE_TYPE))})"
        )
    if cfg.get("partial_rotary_factor", params.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ModelConfigError("partial_rotary_factor != 1 is not supported")
    return RopeArgs(theta=theta, rope_type=rope_type, params=params)


def _sliding_window(cfg: dict[str, Any], arch: ArchFeatures) -> int | None:
    if cfg.get("use_sliding_window"):
        raise ModelConfigError("per-layer sliding window (use_sliding_window) is not supported")
    if arch.sliding_window_key is None:
        return None
    window = cfg.get(arch.sliding_window_key)
    return int(window) if window else None
