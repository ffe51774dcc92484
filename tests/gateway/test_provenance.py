"""Provenance rules and data rules as pure functions: route() and allowed_backends()."""

from __future__ import annotations

import pytest

from gateway.config.schema import Condition, Policy
from gateway.errors import NoBackendError, ProvenanceDeniedError
from gateway.routing.conditions import match_values
from gateway.routing.decide import route
from gateway.routing.features import RequestFeatures
from gateway.routing.provenance import Governance, allowed_backends
from gateway.runtime import static_views

POLICY = {
    "auth": {
        "keys": [
            {
                "name": "ops-bot",
                "key": "os.environ/K1",
                "team": "ops",
                "provenance": {"deny_backends": ["gpt"]},
            },
            {"name": "fed-key", "key": "os.environ/K2", "team": "federal"},
        ]
    },
    "teams": {
        "federal": {"provenance": {"deny": {"origin": "CN"}}},
        "research": {"provenance": {"require": {"weights": "open"}}},
    },
    "data_rules": [
        {
            "name": "confidential",
            "when": {
                "ignore_case": True,
                "any": [
                    {"headers": {"x-data-classification": ["confidential", "restricted"]}},
                    {"metadata": {"data_classification": "confidential"}},
                ],
            },
            "only": {"self_hosted_only": True},
            "fallbacks": ["local"],
        },
        {
            "name": "pii",
            "when": {"headers": {"x-data-class": "pii"}, "ignore_case": True},
            "only": {"self_hosted_only": True, "require": {"weights": "open"}},
        },
    ],
    "backends": {
        "local": {
            "kind": "openai_compatible",
            "base_url": "http://l/v1",
            "model": "m",
            "self_hosted": True,
            "labels": {"weights": "open", "origin": "us"},
        },
        "qwen": {
            "kind": "openai_compatible",
            "base_url": "http://q/v1",
            "model": "q",
            "self_hosted": True,
            "labels": {"vendor": "alibaba", "origin": "cn", "weights": "open"},
        },
        "deepseek-api": {
            "kind": "openai_compatible",
            "base_url": "http://d/v1",
            "model": "d",
            "labels": {"vendor": "deepseek", "origin": "cn", "weights": "open"},
        },
        "gpt": {
            "kind": "openai_compatible",
            "base_url": "http://g/v1",
            "model": "gpt-4o",
            "labels": {"vendor": "openai", "origin": "us", "weights": "closed"},
        },
    },
    "models": {
        "auto": {
            "rules": [{"name": "everyday", "route": ["qwen", "deepseek-api"]}],
            "fallbacks": ["gpt", "local"],
        },
        "gpt-4o": {"route": ["gpt"]},
        "cn": {"route": ["qwen", "deepseek-api"]},
    },
}
ENV = {"K1": "k1", "K2": "k2"}


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.model_validate(POLICY, context={"env": ENV})


def feats(model="auto", team="default", key=None, headers=None, metadata=None) -> RequestFeatures:
    return RequestFeatures(
        operation="chat",
        virtual_model=model,
        team=team,
        key_name=key,
        headers=headers or {},
        metadata=metadata or {},
    )


def decide(policy, f):
    return route(f, policy.models[f.virtual_model], static_views(policy), Governance(policy))


def test_no_rule_applies_everything_allowed(policy):
    d = decide(policy, feats())
    assert d.candidates == ("qwen", "deepseek-api", "gpt", "local")
    assert d.refused == () and d.allowed is None
    assert allowed_backends(Governance(policy), feats(), static_views(policy)) == set(
        policy.backends
    )


def test_team_never_origin_cn_binds_fallbacks(policy):
    d = decide(policy, feats(team="federal"))
    assert d.candidates == (
        "gpt",
        "local",
    )  # origin: cn compared case-insensitively (policy says CN)
    assert {b for b, _ in d.refused} == {"qwen", "deepseek-api"}
    assert {r for _, r in d.refused} == {"team:federal"}
    assert d.allowed == {"gpt", "local"}


def test_team_whose_model_has_only_denied_backends_gets_a_403_naming_the_rule(policy):
    with pytest.raises(ProvenanceDeniedError) as e:
        decide(policy, feats(model="cn", team="federal"))
    assert e.value.status == 403 and e.value.code == "denied_by_policy"
    assert "team:federal" in e.value.message and e.value.rules == ("team:federal",)


def test_require_label(policy):
    d = decide(policy, feats(team="research"))
    assert d.candidates == ("qwen", "deepseek-api", "local")  # gpt has weights: closed


def test_key_denies_a_backend_by_name(policy):
    d = decide(policy, feats(team="ops", key="ops-bot"))
    assert "gpt" not in d.candidates and ("gpt", "key:ops-bot") in d.refused


@pytest.mark.parametrize(
    "headers, metadata",
    [
        ({"x-data-classification": "confidential"}, {}),
        ({"x-data-classification": "Confidential"}, {}),
        ({"x-data-classification": "CONFIDENTIAL"}, {}),
        ({"x-data-classification": " confidential "}, {}),
        ({"x-data-classification": "confidential, internal"}, {}),
        ({"x-data-classification": "internal,Restricted"}, {}),
        ({"x-data-classification": "public, confidential"}, {}),  # two headers, joined
        ({}, {"data_classification": "Confidential"}),
        ({}, {"data_classification": ["internal", "confidential"]}),
    ],
)
@pytest.mark.parametrize("model", ["auto", "gpt-4o", "cn"])
def test_confidential_data_never_reaches_a_proprietary_backend_whatever_the_model(
    policy, model, headers, metadata
):
    d = decide(policy, feats(model=model, headers=headers, metadata=metadata))
    assert d.candidates and all(policy.backends[b].self_hosted for b in d.candidates)
    assert d.allowed == {"local", "qwen"}


def test_confidential_on_a_proprietary_only_model_is_served_by_the_data_rule_fallback(policy):
    d = decide(policy, feats(model="gpt-4o", headers={"x-data-classification": "Confidential"}))
    assert d.candidates == ("local",) and ("gpt", "data:confidential") in d.refused


def test_rules_combine_team_and_data(policy):
    # federal: never origin cn; pii: self-hosted and open weights -> only local is left
    d = decide(policy, feats(team="federal", headers={"x-data-class": "PII"}))
    assert d.candidates == ("local",)


def test_not_matching_values_stay_unrestricted(policy):
    for h in ({"x-data-classification": "public"}, {"x-data-classification": "unconfidential"}):
        assert decide(policy, feats(model="gpt-4o", headers=h)).candidates == ("gpt",)


def test_nothing_allowed_and_a_down_backend_is_a_503_not_a_403(policy):
    views = dict(static_views(policy))
    from dataclasses import replace

    views["local"] = replace(views["local"], available=False)
    f = feats(model="gpt-4o", headers={"x-data-classification": "confidential"})
    with pytest.raises(NoBackendError) as e:
        route(f, policy.models["gpt-4o"], views, Governance(policy))
    assert not isinstance(e.value, ProvenanceDeniedError) and "circuit open" in e.value.message


def test_embeddings_bound_too(policy):
    backends = {k: dict(v) for k, v in POLICY["backends"].items()}
    for b in backends.values():
        b["capabilities"] = {"embeddings": True}
    p = Policy.model_validate(
        {
            **POLICY,
            "backends": backends,
            "models": {"auto": {"embeddings": ["gpt", "local"], "route": ["local"]}},
        },
        context={"env": ENV},
    )
    f = RequestFeatures(
        operation="embeddings",
        virtual_model="auto",
        headers={"x-data-classification": "Confidential"},
    )
    d = route(f, p.models["auto"], static_views(p), Governance(p))
    assert d.candidates == ("local",) and ("gpt", "data:confidential") in d.refused


@pytest.mark.parametrize(
    "want, got, ignore_case, ok",
    [
        ("a", "a", False, True),
        ("a", "A", False, False),
        ("a", "A", True, True),
        (["a", "b"], "x, B", True, True),
        ("a", ["x", "a"], False, True),
        ("a,b", "a,b", False, True),  # a wanted value with a comma still matches whole
        ("a", None, True, False),
        ("confidential", "confidentiality", True, False),
    ],
)
def test_match_values(want, got, ignore_case, ok):
    assert match_values(want, got, ignore_case) is ok


def test_unknown_backend_in_a_data_rule_is_refused_at_load():
    bad = {**POLICY, "data_rules": [{"name": "x", "when": {}, "only": {}, "fallbacks": ["nope"]}]}
    with pytest.raises(ValueError, match="nope"):
        Policy.model_validate(bad, context={"env": ENV})


def test_condition_ignore_case_flows_into_any():
    c = Condition.model_validate({"ignore_case": True, "any": [{"headers": {"X-A": "v"}}]})
    from gateway.routing.conditions import matches

    assert matches(c, feats(headers={"x-a": "V"}), {})
    assert not matches(c.any[0], feats(headers={"x-a": "V"}), {})


def test_gateway_check_shows_the_rules_and_what_each_leaves_allowed():
    from pathlib import Path

    from gateway.config.explain import explain
    from gateway.config.loader import load_policy

    shipped = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"
    out = explain(load_policy(shipped, {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"}))
    assert "data rule confidential-stays-home (every model)" in out
    i = out.index("data rule confidential-stays-home")
    assert "may reach: local\n" in out[i:]
    assert "labels: vendor=openai, origin=us, weights=closed" in out
    gpt4o = out[out.index("model 'gpt-4o'") :]
    line = [x for x in gpt4o.splitlines() if "'Confidential, internal' header" in x][0]
    assert line.rstrip().endswith("-> local  [default]")
