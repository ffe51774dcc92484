"""Where deploy/ lives, and readers for its files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEPLOY", "REPO", "k8s_objects", "load_json", "load_yaml"]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def load_yaml(rel: str) -> Any:
    return yaml.safe_load((DEPLOY / rel).read_text(encoding="utf-8"))


def load_json(rel: str) -> Any:
    return json.loads((DEPLOY / rel).read_text(encoding="utf-8"))


def k8s_objects() -> dict[tuple[str, str], dict]:
    """(kind, name) -> object, over the manifests in deploy/k8s (not kustomization.yaml or
    the *.example.yaml ones, which are not applied)."""
    out = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml" or path.name.endswith(".example.yaml"):
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out
