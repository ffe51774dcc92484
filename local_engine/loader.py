"""Find and read a Hugging Face checkpoint: a local directory, or a hub id when online.

Files read: ``config.json`` (required), ``*.safetensors`` (single file, or shards listed by
``model.safetensors.index.json``), ``generation_config.json`` (optional: default sampling and
eos ids). ``tokenizer.json`` is required for serving and checked here so a bad directory fails
before any weights are read. Weights are memory-mapped one tensor at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from local_engine.errors import EngineError

__all__ = [
    "CheckpointError",
    "REQUIRED_FILES",
    "eos_token_ids",
    "iter_safetensors",
    "read_generation_config",
    "read_hf_config",
    "resolve_model_dir",
]

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"
REQUIRED_FILES = (CONFIG_FILE, "*.safetensors", TOKENIZER_FILE)
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt"]


class CheckpointError(EngineError, ValueError):
    """The checkpoint cannot be found or read; the message names the missing files."""


def _missing_files(path: Path) -> list[str]:
    present = {name: (path / name).is_file() for name in (CONFIG_FILE, TOKENIZER_FILE)}
    present["*.safetensors"] = any(path.glob("*.safetensors"))
    return [name for name in REQUIRED_FILES if not present[name]]


def resolve_model_dir(model: str, require_tokenizer: bool = True) -> Path:
    """A local directory holding the checkpoint; downloads a hub id when the hub is reachable."""
    path = Path(model).expanduser()
    if path.is_dir():
        missing = [m for m in _missing_files(path) if require_tokenizer or m != TOKENIZER_FILE]
        if missing:
            raise CheckpointError(f"model directory {path} lacks {', '.join(missing)}")
        return path
    if path.is_absolute() or model.startswith(".") or model.count("/") != 1:
        raise CheckpointError(
            f"model {model!r} is neither a local directory nor a hub id (org/name)"
        )
    return _download(model)


def _download(repo_id: str) -> Path:
    # imported here: only hub ids need it, and it reads its environment at import time
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except (LocalEntryNotFoundError, HfHubHTTPError, HFValidationError, OSError) as exc:
        raise CheckpointError(
            f"model {repo_id!r} is not a local directory and could not be fetched from the Hugging Face Hub "
            f"(offline or no access?); a local copy needs {', '.join(REQUIRED_FILES)}: {exc}"
        ) from exc
    missing = _missing_files(path)
    if missing:
        raise CheckpointError(f"hub model {repo_id!r} lacks {', '.join(missing)}")
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def read_hf_config(model_dir: Path) -> dict[str, Any]:
    if not (model_dir / CONFIG_FILE).is_file():
        raise CheckpointError(f"model directory {model_dir} lacks {CONFIG_FILE}")
    return _read_json(model_dir / CONFIG_FILE)


def read_generation_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / GENERATION_CONFIG_FILE
    return _read_json(path) if path.is_file() else {}


def eos_token_ids(hf_config: dict[str, Any], generation_config: dict[str, Any]) -> set[int]:
    ids: set[int] = set()
    for value in (hf_config.get("eos_token_id"), generation_config.get("eos_token_id")):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(int(v) for v in value)
    return ids


def _shard_files(model_dir: Path) -> list[Path]:
    index = model_dir / SAFETENSORS_INDEX_FILE
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} has no weight_map")
        files = [model_dir / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index} lists shards that are missing: {', '.join(missing)}")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"model directory {model_dir} lacks *.safetensors")
    return files


def iter_safetensors(model_dir: Path, device: str = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` for every tensor of every shard."""
    for file in _shard_files(model_dir):
        try:
            with safe_open(file, framework="pt", device=device) as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    yield name, f.get_tensor(name)
        except (OSError, SafetensorError) as exc:
            raise CheckpointError(f"cannot read {file}: {exc}") from exc
