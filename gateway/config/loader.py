"""Load a policy file: YAML -> validated ``Policy``, with errors that name the YAML path and line."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.config.schema import BACKEND_KINDS, Policy
from gateway.errors import PolicyError

log = logging.getLogger("gateway.policy")

__all__ = ["LoadedPolicy", "load_policy", "parse_policy", "read_policy_text"]


@dataclass(slots=True)
class LoadedPolicy:
    policy: Policy
    source: str
    # Human-readable notes from loading: disabled backends, literal secrets, open auth.
    warnings: list[str] = field(default_factory=list)

    @property
    def enabled_backends(self) -> list[str]:
        return [
            n for n, b in self.policy.backends.items() if b.enabled and b.disabled_reason is None
        ]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key and sequence item."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    keys = set()
    for key_node, _ in node.value:
        k = loader.construct_object(key_node, deep=deep)
        if k in keys:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {k!r}", key_node.start_mark
            )
        keys.add(k)
    return loader.construct_mapping(node, deep=deep)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_index(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each YAML path (tuple of keys/indices) to its 1-based line."""
    out = {} if out is None else out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = k.start_mark.line + 1
            _line_index(v, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_index(v, path + (i,), out)
    return out


def _format_errors(exc: ValidationError, lines: dict[tuple, int], source: str) -> str:
    msgs = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # pydantic adds the tagged-union/type name to some locations (a backend's kind after
        # its name); keep the YAML-ish part.
        ypath = tuple(
            p
            for i, p in enumerate(loc)
            if isinstance(p, int)
            or not (
                str(p).startswith("function-")
                or (i >= 2 and loc[i - 2] == "backends" and p in BACKEND_KINDS)
            )
        )
        line = None
        for n in range(len(ypath), -1, -1):
            line = lines.get(ypath[:n])
            if line is not None:
                break
        where = ".".join(str(p) for p in ypath) or "(top level)"
        at = f"{source}:{line}" if line else source
        msg = err["msg"].removeprefix("Value error, ")
        msgs.append(f"{at}: {where}: {msg}")
    return "invalid policy:\n  " + "\n  ".join(msgs)


def parse_policy(text: str, env: Mapping[str, str], source: str = "<policy>") -> LoadedPolicy:
    """Validate policy text. ``env`` resolves ``os.environ/NAME`` references."""
    try:
        return _parse(text, env, source)
    except RecursionError:  # PyYAML and validation recurse per level: '[[[[...' of any depth
        raise PolicyError(f"{source}: nested too deeply to be a policy") from None


def _parse(text: str, env: Mapping[str, str], source: str) -> LoadedPolicy:
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a policy is a YAML mapping (backends:, models:, ...)")
    lines = _line_index(node) if node is not None else {}
    ctx: dict[str, Any] = {
        "env": dict(env),
        "allow_literal_secrets": bool(data.get("allow_literal_secrets")),
        "unset_secrets": [],
        "literal_secrets": [],
    }
    try:
        policy = Policy.model_validate(data, context=ctx)
    except ValidationError as exc:
        raise PolicyError(_format_errors(exc, lines, source)) from None
    loaded = LoadedPolicy(policy=policy, source=source)
    _disable_unset(policy, data, env, loaded)
    if ctx["literal_secrets"]:
        loaded.warnings.append(
            f"SECURITY: {len(ctx['literal_secrets'])} literal secret(s) in {source} "
            "(allow_literal_secrets is on); use os.environ/NAME references"
        )
    if not any(k.key is not None for k in policy.auth.keys):
        loaded.warnings.append("auth: no client keys configured: the gateway accepts any caller")
    if not loaded.enabled_backends:
        raise PolicyError(f"{source}: every backend is disabled: " + "; ".join(loaded.warnings))
    return loaded


def _disable_unset(
    policy: Policy, data: dict, env: Mapping[str, str], loaded: LoadedPolicy
) -> None:
    """A backend whose api_key reference is unset is switched off with one clear line."""
    from gateway.config.schema import ENV_REF

    raw_backends = data.get("backends") or {}
    for name, cfg in policy.backends.items():
        if not cfg.enabled:
            cfg.disable("enabled: false")
        raw_key = (raw_backends.get(name) or {}).get("api_key")
        if cfg.api_key is None and isinstance(raw_key, str):
            m = ENV_REF.match(raw_key)
            if m:
                cfg.disable(f"environment variable {m.group(1)} is not set")
        if cfg.disabled_reason:
            loaded.warnings.append(f"backend {name!r} disabled: {cfg.disabled_reason}")


def read_policy_text(path: str | Path) -> str:
    """The policy file's text; a file that cannot be read is a PolicyError naming it (and, for a
    relative path, where it was looked for: relative paths are taken from the working directory)."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as exc:
        where = "" if p.is_absolute() else f" (looked for {p.absolute()})"
        raise PolicyError(f"cannot read policy {p}{where}: {exc.strerror}") from exc


def load_policy(path: str | Path, env: Mapping[str, str]) -> LoadedPolicy:
    return parse_policy(read_policy_text(path), env, source=str(Path(path)))
