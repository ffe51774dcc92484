"""Gateway policies for tests, built as data and written as YAML.

Most gateway tests declare the same three backends: a self-hosted OpenAI-compatible one (a
``mock_openai`` or the local engine), OpenAI behind ``openai_compatible``, and Anthropic
through litellm. The builders here hold what those have in common, so a test spells out only
what it is about (pricing, retries, labels, the rules)::

    text = policy_yaml(
        cache={"enabled": False, "namespace": ns},
        backends={"local": local_backend(url, retry=NO_RETRY)},
        models={"auto": {"route": "local"}},
    )

A field given as ``None`` is left out, to drop one of a builder's defaults (``api_key=None``).
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = [
    "NO_RETRY",
    "anthropic_backend",
    "client_key",
    "local_backend",
    "openai_backend",
    "policy_yaml",
]

NO_RETRY = {"max_attempts": 1}


class _Dumper(yaml.SafeDumper):
    """Writes a dict used twice (one retry setting for two backends) out twice, not as an
    anchor and an alias, so the file reads as if written by hand."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _backend(defaults: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in {**defaults, **fields}.items() if v is not None}


def local_backend(base_url: str, **fields: Any) -> dict[str, Any]:
    """Self-hosted, OpenAI-compatible, model ``qwen-local`` (what ``mock_openai`` serves)."""
    defaults = {
        "kind": "openai_compatible",
        "base_url": base_url,
        "model": "qwen-local",
        "self_hosted": True,
    }
    return _backend(defaults, fields)


def openai_backend(base_url: str, **fields: Any) -> dict[str, Any]:
    """OpenAI's API (here a loopback ``mock_openai``), model ``gpt-4o``, key from the env."""
    defaults = {
        "kind": "openai_compatible",
        "base_url": base_url,
        "model": "gpt-4o",
        "api_key": "os.environ/OPENAI_API_KEY",
    }
    return _backend(defaults, fields)


def anthropic_backend(base_url: str, **fields: Any) -> dict[str, Any]:
    """Anthropic through litellm (here a loopback ``mock_anthropic``), key from the env."""
    defaults = {
        "kind": "litellm",
        "model": "anthropic/claude-sonnet-4-5",
        "base_url": base_url,
        "api_key": "os.environ/ANTHROPIC_API_KEY",
    }
    return _backend(defaults, fields)


def client_key(name: str, env_var: str, team: str, **fields: Any) -> dict[str, Any]:
    """One ``auth.keys`` entry whose secret is read from ``env_var`` (None fields left out)."""
    entry = {"name": name, "key": f"os.environ/{env_var}", "team": team, **fields}
    return {k: v for k, v in entry.items() if v is not None}


def policy_yaml(*, backends: dict[str, Any], models: dict[str, Any], **sections: Any) -> str:
    """The policy file's text: ``sections`` (auth, server, cache, ...) then backends and models."""
    policy = {**sections, "backends": backends, "models": models}
    return yaml.dump(policy, Dumper=_Dumper, sort_keys=False)
