"""``config.json`` ``model_type`` -> the decoder's feature set. Adding a family is one entry."""

from __future__ import annotations

from typing import Any

import torch

from local_engine.models.decoder import DecoderForCausalLM
from local_engine.models.decoder_args import ArchFeatures, DecoderArgs, ModelConfigError

ARCHITECTURES: dict[str, ArchFeatures] = {
    "llama": ArchFeatures(),  # Llama 2/3/3.1; attention_bias read from config
    "mistral": ArchFeatures(qkv_bias=False, o_bias=False, sliding_window_key="sliding_window"),
    "qwen2": ArchFeatures(qkv_bias=True, o_bias=False),
    "qwen3": ArchFeatures(
        qk_norm=True
    ),  # attention_bias read from config (False in released models)
}
SUPPORTED_MODEL_TYPES = tuple(sorted(ARCHITECTURES))


class UnsupportedModelError(ModelConfigError):
    """config.json names a model_type this engine has no decoder for."""


def decoder_args(hf_config: dict[str, Any]) -> DecoderArgs:
    model_type = hf_config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    return DecoderArgs.from_hf(hf_config, ARCHITECTURES[model_type])


def build_model(
    hf_config: dict[str, Any], max_positions: int, dtype: torch.dtype, device: torch.device
) -> DecoderForCausalLM:
    """An uninitialised model; fill it with ``models.weights.load_weights``."""
    return DecoderForCausalLM(decoder_args(hf_config), max_positions, dtype, device).eval()
