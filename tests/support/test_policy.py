"""The test-policy builders give text the gateway's own loader accepts, with the defaults each
builder promises, a test's fields on top, and a field given as None left out."""

from __future__ import annotations

import pytest

from gateway.config.loader import PolicyError, parse_policy
from tests.support.policy import (
    NO_RETRY,
    anthropic_backend,
    client_key,
    local_backend,
    openai_backend,
    policy_yaml,
)

ENV = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "KEY_A": "client-a"}


def test_the_three_backends_load_as_the_gateway_reads_them() -> None:
    text = policy_yaml(
        auth={"keys": [client_key("alpha", "KEY_A", "alpha", rpm=5)]},
        backends={
            "local": local_backend("http://127.0.0.1:1/v1", retry=NO_RETRY),
            "openai": openai_backend("http://127.0.0.1:2/v1", retry=NO_RETRY),
            "claude": anthropic_backend("http://127.0.0.1:3"),
        },
        models={"auto": {"route": "local", "fallbacks": ["openai", "claude"]}},
    )
    assert "&id" not in text and "*id" not in text  # a shared dict is written out, not aliased
    policy = parse_policy(text, ENV).policy
    local, oai, claude = (policy.backends[n] for n in ("local", "openai", "claude"))
    assert (local.kind, local.model, local.self_hosted) == ("openai_compatible", "qwen-local", True)
    assert local.retry.max_attempts == 1
    assert (oai.kind, oai.model, oai.self_hosted) == ("openai_compatible", "gpt-4o", False)
    assert (claude.kind, claude.model) == ("litellm", "anthropic/claude-sonnet-4-5")
    assert [k.team for k in policy.auth.keys] == ["alpha"] and policy.auth.keys[0].rpm == 5


def test_a_field_given_as_none_drops_the_default_and_others_override_it() -> None:
    backend = openai_backend("http://x/v1", api_key=None, model="gpt-5-mini")
    assert "api_key" not in backend and backend["model"] == "gpt-5-mini"
    assert local_backend("http://x/v1", self_hosted=None) == {
        "kind": "openai_compatible",
        "base_url": "http://x/v1",
        "model": "qwen-local",
    }


def test_a_misspelt_field_still_fails_to_load() -> None:
    text = policy_yaml(
        backends={"local": local_backend("http://x/v1", retries=NO_RETRY)},
        models={"auto": {"route": "local"}},
    )
    with pytest.raises(PolicyError, match="retries"):
        parse_policy(text, ENV)
