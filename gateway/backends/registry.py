"""Backend adapters by the policy's ``kind``: a table, not a chain of ifs.

Adapter modules are imported on first use: the litellm adapter pulls in litellm (seconds of
import), which a policy with only OpenAI-compatible backends never needs.
"""

from __future__ import annotations

import importlib

from gateway.backends.base import Backend
from gateway.config.schema import BackendConfig, OpenAICompatConfig

__all__ = ["ADAPTERS", "build_backend"]

# kind -> "module:class"
ADAPTERS: dict[str, str] = {
    "openai_compatible": "gateway.backends.openai_compat:OpenAICompatBackend",
    "litellm": "gateway.backends.litellm_backend:LiteLLMBackend",
}


def build_backend(name: str, cfg: BackendConfig) -> Backend:
    """A ready (not yet connected) adapter for one backend of the policy."""
    if isinstance(cfg, OpenAICompatConfig) and cfg.fleet is not None:
        from gateway.backends.fleet import FleetBackend  # several replicas behind one name

        return FleetBackend(name, cfg, cfg.fleet)
    try:
        target = ADAPTERS[cfg.kind]
    except KeyError:
        raise ValueError(
            f"backend {name!r}: unknown kind {cfg.kind!r}; known: {sorted(ADAPTERS)}"
        ) from None
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(name, cfg)
