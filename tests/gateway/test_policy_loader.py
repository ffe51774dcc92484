import pytest

from gateway.config.loader import load_policy, parse_policy
from gateway.errors import PolicyError

BASE = """
backends:
  local: {kind: openai_compatible, base_url: "os.environ/LOCAL_URL:-http://127.0.0.1:8000/v1", model: m, self_hosted: true}
  gpt:
    kind: openai_compatible
    base_url: http://example/v1
    model: gpt-4o
    api_key: os.environ/OPENAI_API_KEY
models:
  auto: {route: [local, gpt]}
"""


def test_env_refs_and_defaults():
    lp = parse_policy(BASE, {"OPENAI_API_KEY": "sk-test"})
    b = lp.policy.backends
    assert b["local"].base_url == "http://127.0.0.1:8000/v1"
    assert b["gpt"].api_key.get_secret_value() == "sk-test"
    assert lp.enabled_backends == ["local", "gpt"]
    lp = parse_policy(BASE, {"LOCAL_URL": "http://other:1/v1", "OPENAI_API_KEY": "k"})
    assert lp.policy.backends["local"].base_url == "http://other:1/v1"


def test_unset_key_disables_backend_with_one_clear_line():
    lp = parse_policy(BASE, {})
    assert lp.enabled_backends == ["local"]
    lines = [w for w in lp.warnings if "gpt" in w]
    assert lines == ["backend 'gpt' disabled: environment variable OPENAI_API_KEY is not set"]


def test_secret_values_never_in_repr_or_errors():
    lp = parse_policy(BASE, {"OPENAI_API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in repr(lp.policy)
    assert "sk-very-secret" not in lp.policy.model_dump_json()


def test_literal_secret_refused_then_warned():
    text = BASE.replace("os.environ/OPENAI_API_KEY", "sk-literal")
    with pytest.raises(PolicyError) as e:
        parse_policy(text, {})
    assert "literal secret" in str(e.value) and "sk-literal" not in str(e.value)
    lp = parse_policy("allow_literal_secrets: true\n" + text, {})
    assert any("SECURITY" in w for w in lp.warnings)


def test_unknown_key_names_path_and_line(tmp_path):
    text = BASE.replace(
        "  auto: {route: [local, gpt]}", "  auto:\n    route: [local, gpt]\n    rules_typo: []"
    )
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(PolicyError) as e:
        load_policy(p, {})
    msg = str(e.value)
    assert f"{p}:" in msg and "models.auto.rules_typo" in msg
    line = text.splitlines().index("    rules_typo: []") + 1
    assert f":{line}:" in msg


@pytest.mark.parametrize(
    "text, needle",
    [
        (BASE.replace("route: [local, gpt]", "route: [local, nope]"), "unknown backend 'nope'"),
        (BASE.replace("kind: openai_compatible, base_url", "kind: grpc, base_url"), "kind"),
        ("backends: {}\nmodels: {}\n", "backends"),
        ("- a list\n", "YAML mapping"),
        ("backends: {a: 1\n", "not valid YAML"),
        (BASE + "models: {}\n", "duplicate key"),
        (
            BASE.replace(
                "auto: {route: [local, gpt]}",
                "auto: {rules: [{name: x, route: gpt, self_hosted_only: true}]}",
            ),
            "self_hosted_only",
        ),
    ],
)
def test_invalid_policies(text, needle):
    with pytest.raises(PolicyError) as e:
        parse_policy(text, {"OPENAI_API_KEY": "k"})
    assert needle in str(e.value)


def test_unset_base_url_disables_backend():
    text = BASE.replace('"os.environ/LOCAL_URL:-http://127.0.0.1:8000/v1"', "os.environ/LOCAL_URL")
    lp = parse_policy(text, {"OPENAI_API_KEY": "k"})
    assert lp.enabled_backends == ["gpt"]
    with pytest.raises(PolicyError):  # nothing left at all
        parse_policy(text, {})


@pytest.mark.parametrize(
    "name", ["default.yaml", "frontier-only-when-proven.yaml", "local-only.yaml"]
)
def test_shipped_policies_load(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "policies" / name
    lp = load_policy(path, {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"})
    assert "auto" in lp.policy.models
    lp = load_policy(path, {})  # no keys at all: still loads, proprietary backends disabled
    assert all(lp.policy.backends[n].self_hosted for n in lp.enabled_backends)


def test_published_json_schema_is_current():
    from pathlib import Path

    from gateway.config.schema import policy_json_schema

    published = Path(__file__).resolve().parents[2] / "policies" / "policy.schema.json"
    assert published.read_text() == policy_json_schema(), (
        "run: gateway schema --out policies/policy.schema.json"
    )


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_yaml_is_a_policy_error_not_a_recursion_error(depth):
    with pytest.raises(PolicyError, match="nested too deeply"):
        parse_policy("backends: " + "[" * depth + "]" * depth, {})


def test_header_values_may_be_env_refs_for_backends_and_tracing():
    text = (
        BASE.replace(
            "model: m, self_hosted: true}",
            'model: m, self_hosted: true, headers: {x-org: "os.environ/ORG:-acme", x-n: plain}}',
        )
        + "tracing:\n  otlp_endpoint: http://c:4318/v1/traces\n"
        + "  headers: {authorization: os.environ/OTLP_AUTH}\n"
    )
    lp = parse_policy(text, {"OTLP_AUTH": "Bearer t", "OPENAI_API_KEY": "k"})
    assert lp.policy.backends["local"].headers == {"x-org": "acme", "x-n": "plain"}
    assert lp.policy.tracing.headers == {"authorization": "Bearer t"}
    lp = parse_policy(text, {"ORG": "other", "OTLP_AUTH": "x", "OPENAI_API_KEY": "k"})
    assert lp.policy.backends["local"].headers["x-org"] == "other"
