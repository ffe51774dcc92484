"""Fixtures that build tiny random checkpoints (HF layout) once per test session.

Each architecture gets its own seed and a setting that exercises what sets it apart: llama3
RoPE scaling with a short original context, Mistral with a sliding window shorter than the
test sequences, Qwen2 with q/k/v bias and tied embeddings, Qwen3 with q/k norm.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local_engine.demo_model import build_tiny_checkpoint

# test name -> (demo arch, build overrides)
TINY_ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", {"seed": 1}),
    "llama3": ("llama3", {"seed": 2}),
    "mistral": ("mistral", {"seed": 3, "sliding_window": 12}),
    "qwen2": ("qwen2", {"seed": 4}),
    "qwen3": ("qwen3", {"seed": 5}),
}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``tiny_checkpoint(name, **overrides) -> Path``; built once per distinct request."""
    built: dict[tuple, Path] = {}

    def build(name: str = "qwen2", **overrides: Any) -> Path:
        key = (name, tuple(sorted(overrides.items())))
        if key not in built:
            arch, preset = TINY_ARCHS[name]
            out = tmp_path_factory.mktemp(f"tiny_{name}")
            built[key] = build_tiny_checkpoint(out, arch, **{**preset, **overrides})
        return built[key]

    return build


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_checkpoint: Callable[..., Path]) -> Path:
    """The default tiny model (Qwen2 layout, ChatML template) for engine and server tests."""
    return tiny_checkpoint("qwen2")


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread():
    """Tiny tensors gain nothing from threads, and on a busy shared CPU OpenMP barriers turn
    millisecond steps into half-second ones; one thread keeps these tests fast and steady."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
