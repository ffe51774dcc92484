"""The routing decision is a pure function: exercise it exhaustively without any I/O."""

import pytest

from gateway.config.loader import parse_policy
from gateway.errors import ContextLengthError, NoBackendError
from gateway.routing.decide import BackendView, route
from gateway.routing.features import RequestFeatures, extract_features
from gateway.server.validate import validate

POLICY = """
backends:
  local: {kind: openai_compatible, base_url: "http://l/v1", model: m, self_hosted: true}
  local2: {kind: openai_compatible, base_url: "http://l2/v1", model: m, self_hosted: true}
  gpt: {kind: openai_compatible, base_url: "http://g/v1", model: gpt-4o, api_key: os.environ/K}
  claude: {kind: litellm, model: anthropic/claude-sonnet-4-5, api_key: os.environ/K}
  emb: {kind: openai_compatible, base_url: "http://g/v1", model: e, api_key: os.environ/K}
models:
  auto:
    fallbacks: [gpt, claude]
    embeddings: [emb]
    rules:
      - name: secret
        when:
          any:
            - headers: {X-Data-Classification: confidential}
            - metadata: {classification: [confidential, restricted]}
        route: [local, local2]
        self_hosted_only: true
      - {name: vision, when: {needs: [vision]}, route: [gpt, claude]}
      - {name: long, when: {exceeds_context_of: local}, route: [claude, gpt]}
      - {name: research, when: {teams: [research], difficulty: {gte: 0.5}}, route: [claude]}
      - {name: hard, when: {difficulty: hard}, route: [gpt]}
      - {name: big, when: {prompt_tokens: {gt: 1000}, stream: false}, route: [local2]}
      - {name: everyday, route: local}
"""


def views(**over):
    base = {
        "local": BackendView("local", True, context_window=1000, tools=True),
        "local2": BackendView("local2", True, context_window=8000),
        "gpt": BackendView("gpt", False, vision=True, json_schema=True, context_window=128000),
        "claude": BackendView("claude", False, vision=True, context_window=200000),
        "emb": BackendView("emb", False, chat=False, embeddings=True),
    }
    for name, kw in over.items():
        v = base[name]
        base[name] = BackendView(**{s: getattr(v, s) for s in BackendView.__slots__} | kw)
    return base


@pytest.fixture(scope="module")
def model():
    return parse_policy(POLICY, {"K": "x"}).policy.models["auto"]


def feat(**kw):
    kw.setdefault("operation", "chat")
    kw.setdefault("virtual_model", "auto")
    kw.setdefault("prompt_tokens", 100)
    return RequestFeatures(**kw)


def test_first_matching_rule_wins_and_fallbacks_follow(model):
    d = route(feat(), model, views())
    assert d.reason == "everyday"
    assert d.candidates == ("local", "gpt", "claude")


def test_vision_never_goes_to_a_text_only_backend(model):
    d = route(feat(needs=frozenset({"vision"})), model, views())
    assert d.reason == "vision" and d.candidates == ("gpt", "claude")


def test_context_window_rule_and_builtin_check(model):
    d = route(feat(prompt_tokens=900, max_output_tokens=200), model, views())
    assert d.reason == "long"
    assert "local" not in d.candidates
    # the exact count by the backend's tokenizer wins over the estimate
    f = feat(prompt_tokens=900, max_output_tokens=200, exact_tokens={"local": 500})
    assert route(f, model, views()).reason == "everyday"


def test_difficulty_threshold_and_team(model):
    assert route(feat(difficulty=0.9, difficulty_threshold=0.8), model, views()).reason == "hard"
    assert (
        route(feat(difficulty=0.7, difficulty_threshold=0.8), model, views()).reason == "everyday"
    )
    d = route(feat(difficulty=0.6, team="research"), model, views())
    assert d.reason == "research" and d.candidates == ("claude", "gpt")
    # no score computed: difficulty rules never match
    assert route(feat(team="research"), model, views()).reason == "everyday"


def test_prompt_tokens_and_stream_conditions(model):
    assert (
        route(feat(prompt_tokens=2000, exact_tokens={"local": 10}), model, views()).reason == "big"
    )
    assert (
        route(
            feat(prompt_tokens=2000, stream=True, exact_tokens={"local": 10}), model, views()
        ).reason
        == "everyday"
    )


@pytest.mark.parametrize(
    "f",
    [
        feat(headers={"x-data-classification": "confidential"}),
        feat(metadata={"classification": "restricted"}),
        feat(headers={"x-data-classification": "confidential"}, prompt_tokens=5000),
    ],
)
def test_confidential_never_leaves_even_as_fallback(model, f):
    d = route(f, model, views())
    assert d.reason == "secret" and d.self_hosted_only
    assert set(d.candidates) <= {"local", "local2"}


def test_confidential_with_vision_is_refused_not_leaked(model):
    f = feat(headers={"x-data-classification": "confidential"}, needs=frozenset({"vision"}))
    # local backends have no vision, so nothing eligible remains
    with pytest.raises(NoBackendError) as e:
        route(f, model, views(local=dict(vision=False)))
    assert "self-hosted" in e.value.message
    f2 = feat(headers={"x-data-classification": "confidential"})
    with pytest.raises(NoBackendError):
        route(f2, model, views(local=dict(available=False), local2=dict(available=False)))


def test_a_request_too_long_for_every_window_is_a_400_not_a_503(model):
    with pytest.raises(ContextLengthError) as e:
        route(feat(max_output_tokens=2**31 - 1), model, views())
    assert e.value.status == 400 and e.value.code == "context_length_exceeded"
    assert e.value.param == "messages"
    f = feat(operation="completions", prompt_tokens=10**6)
    with pytest.raises(ContextLengthError) as e:
        route(f, model, views())
    assert e.value.param == "prompt"
    # too long for the one that is up, but another one is only down for now: retry may help
    with pytest.raises(NoBackendError) as e2:
        route(
            feat(prompt_tokens=5000, headers={"x-data-classification": "confidential"}),
            model,
            views(local2=dict(available=False)),
        )
    assert e2.value.should_retry is None


def test_refusals_no_retry_can_change_say_so(model):
    # confidential + vision: no self-hosted backend has vision, whatever the circuits do
    f = feat(headers={"x-data-classification": "confidential"}, needs=frozenset({"vision"}))
    with pytest.raises(NoBackendError) as e:
        route(f, model, views())
    assert e.value.should_retry is False
    # every candidate's circuit is open: that passes, so the client may retry
    f2 = feat(headers={"x-data-classification": "confidential"})
    with pytest.raises(NoBackendError) as e:
        route(f2, model, views(local=dict(available=False), local2=dict(available=False)))
    assert e.value.should_retry is None


def test_open_circuit_and_disabled_backends_are_skipped(model):
    d = route(feat(), model, views(local=dict(available=False)))
    assert d.candidates == ("gpt", "claude")
    assert ("local", "circuit open") in d.skipped
    d = route(feat(), model, views(gpt=dict(enabled=False)))
    assert d.candidates == ("local", "claude")


def test_forced_self_hosted_only(model):
    d = route(feat(self_hosted_only=True), model, views())
    assert d.candidates == ("local",)


def test_tools_and_json_schema_capabilities(model):
    d = route(feat(needs=frozenset({"json_schema"})), model, views())
    assert d.candidates == ("gpt",)
    d = route(feat(needs=frozenset({"tools"})), model, views(local=dict(tools=False)))
    assert d.candidates == ("gpt", "claude")


def test_embeddings_route_and_data_rules(model):
    req = validate("embeddings", {"model": "auto", "input": "hi"})
    f = extract_features(req)
    assert route(f, model, views()).candidates == ("emb",)
    f = extract_features(req, headers={"x-data-classification": "confidential"})
    with pytest.raises(NoBackendError):
        route(f, model, views())


def test_extract_features():
    body = {
        "model": "auto",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "x" * 350},
                    {"type": "image_url", "image_url": {"url": "data:"}},
                ],
            }
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}},
        "max_completion_tokens": 50,
        "stream": True,
        "metadata": {"a": "b"},
    }
    f = extract_features(validate("chat", body), team="t", key_name="k")
    assert f.needs == {"vision", "tools", "json_schema"}
    assert f.max_output_tokens == 50 and f.stream and f.metadata == {"a": "b"}
    assert f.prompt_tokens >= 100 + 85  # 350 chars / 3.5 + image


def _unconfigured():
    """No provider key: every proprietary backend disabled (a first run)."""
    return views(**{n: {"enabled": False} for n in ("gpt", "claude", "emb")})


def test_unconfigured_proprietary_side_degrades_to_self_hosted(model):
    d = route(feat(difficulty=0.9, difficulty_threshold=0.5), model, _unconfigured())
    assert d.reason == "hard" and d.degraded
    assert d.candidates == ("local", "local2")  # the policy's self-hosted backends, in order
    # where self-hosted cannot serve it, still a clear refusal
    with pytest.raises(NoBackendError, match="local: no vision"):
        route(feat(needs=frozenset({"vision"})), model, _unconfigured())
    with pytest.raises(NoBackendError):
        route(feat(operation="embeddings"), model, _unconfigured())
    with pytest.raises(ContextLengthError):  # too long for every self-hosted window
        route(feat(prompt_tokens=9000), model, _unconfigured())


def test_no_degrading_while_anything_the_rule_names_is_configured(model):
    d = route(feat(difficulty=0.9, difficulty_threshold=0.5), model, views())
    assert d.candidates[0] == "gpt" and not d.degraded
    # an open circuit is not "unconfigured": no silent move to self-hosted
    with pytest.raises(NoBackendError, match="circuit open"):
        route(
            feat(difficulty=0.9, difficulty_threshold=0.5, team="research"),
            model,
            views(gpt={"available": False}, claude={"enabled": False}),
        )


def test_validate_describes_the_request_in_one_walk():
    """validate() returns what routing reads; the estimate matches the documented formula."""
    body = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "s" * 70},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "1", "function": {"name": "ab", "arguments": "{}"}}],
            },
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "n": 2,
        "seed": 3,
    }
    req = validate("chat", body, b"raw")
    # 70 + 4 characters -> ceil(74 / 3.5) = 22, plus 4 tokens for each of the two messages
    assert req.prompt_tokens == 22 + 8 and req.needs == frozenset()
    assert req.stream and req.include_usage and req.n == 2 and req.seed == 3
    assert req.raw == b"raw" and req.messages is body["messages"] and req.protocol == "openai"
    assert validate("completions", {"model": "m", "prompt": [1, 2, 3]}).prompt_tokens == 3
    assert validate("embeddings", {"model": "m", "input": "x" * 7}).messages == []
