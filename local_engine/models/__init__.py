"""Decoder-only models: one unified decoder, configured per ``model_type`` from a registry."""

from local_engine.models.registry import SUPPORTED_MODEL_TYPES, UnsupportedModelError, build_model

__all__ = ["SUPPORTED_MODEL_TYPES", "UnsupportedModelError", "build_model"]
