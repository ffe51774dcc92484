"""What every policy section shares: the strict base class and ``os.environ/NAME`` references."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo

__all__ = ["ENV_REF", "Strict", "resolve_env", "resolve_env_values"]

ENV_REF = re.compile(r"^os\.environ/([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$")


def resolve_env(value: str, info: ValidationInfo) -> str | None:
    """``os.environ/NAME[:-default]`` -> the variable's value, the default, or None if unset."""
    m = ENV_REF.match(value)
    if not m:
        return value
    env = (info.context or {}).get("env", {})
    name, default = m.group(1), m.group(2)
    got = env.get(name)
    return got if got not in (None, "") else default


def resolve_env_values(value: Any, info: ValidationInfo) -> Any:
    """A mapping's string values resolved as ``resolve_env`` does (headers); else unchanged."""
    if isinstance(value, dict):
        return {k: resolve_env(x, info) if isinstance(x, str) else x for k, x in value.items()}
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
