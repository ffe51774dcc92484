"""Native pass-through: a caller's own protocol to a backend that speaks it, untranslated.

The official ``anthropic`` SDK -> the real gateway -> a loopback Anthropic Messages mock
(kind litellm, ``anthropic/...``: native by default), and the ``openai`` SDK's Responses
client -> the gateway -> a loopback server speaking Responses (``native_protocols:
[responses]``). Thinking blocks, ``cache_control`` and reasoning items arrive and come back
unchanged, streamed and not; data rules, fallbacks to a chat-only backend (translated), the
caller's error shapes, headers, metrics and spend hold as on every other path.
"""

from __future__ import annotations

import copy
import json
import time

import anthropic
import httpx
import openai
import pytest

from gateway.backends.pricing import lookup_model
from tests.gateway.native_support import eventually, ledger_rows, metric, samples, serving
from tests.gateway.pg_harness import fresh_database
from tests.support.mock_anthropic import (
    CACHED,
    SIGNATURE,
    WRITTEN,
    count_of,
    running_mock_anthropic,
)
from tests.support.mock_openai import running_mock_openai

KEY = "gw-native-key-ALPHA"
THRIFTY_KEY = "gw-native-key-THRIFTY"
FRUGAL_KEY = "gw-native-key-FRUGAL"
UP_KEY = "sk-ant-native-upstream-SECRET"
GPT_KEY = "sk-gpt-native-upstream-SECRET"
BETA = "interleaved-thinking-2025-05-14,prompt-caching-2024-07-31"
IN_USD, OUT_USD = 3.0, 15.0  # the native backends' prices per million tokens
READ_USD, WRITE_USD = 0.5, 4.0  # claude-cache's prompt-cache prices per million tokens
# the savings reference (per million tokens: input, output, cache read, cache write)
REF_USD = (15.0, 75.0, 1.5, 18.75)
COUNT_COOLDOWN_S = 3.0  # claude-count's circuit: open this long, then half-open

POLICY = """
auth:
  keys:
    - {{name: alpha, key: os.environ/KEY, team: alpha}}
    - {{name: thrifty, key: os.environ/THRIFTY_KEY, team: thrifty}}
    - {{name: frugal, key: os.environ/FRUGAL_KEY, team: frugal}}
teams:
  thrifty: {{budget_usd: 0.00001, budget_period: day}}  # less than one native answer costs
  frugal: {{budget_usd: 0.00001, budget_period: day}}
cache: {{enabled: true, namespace: {ns}}}  # in-process; temperature-0 requests only
state_redis_url: "redis://127.0.0.1:6379/0"
ledger: {{database_url: "{db}", spool_dir: "{spool}", flush_interval_s: 0.05}}
savings:
  reference_model: reference-opus
  reference_pricing:
    input_usd_per_mtok: {ref_in}
    output_usd_per_mtok: {ref_out}
    cache_read_usd_per_mtok: {ref_read}
    cache_write_usd_per_mtok: {ref_write}
data_rules:
  - name: confidential-stays-home
    when:
      ignore_case: true
      any:
        - headers: {{x-data-classification: confidential}}
        - metadata: {{data_classification: confidential}}
    only: {{self_hosted_only: true}}
    fallbacks: [local]
  - name: eu-residency
    when:
      any:
        - headers: {{x-data-residency: eu}}
        - metadata: {{data_residency: eu}}
    only: {{require: {{region: eu}}}}
    fallbacks: [local]
backends:
  local:
    kind: openai_compatible
    base_url: {local}
    model: qwen-local
    self_hosted: true
    labels: {{region: eu}}
    pricing: {{gpu_usd_per_hour: 3.6, tokens_per_second: 1000}}
    capabilities: {{context_window: 32768, tools: true}}
    retry: {{max_attempts: 1}}
  claude:
    kind: litellm
    model: anthropic/claude-sonnet-4-5
    base_url: {anthropic}
    api_key: os.environ/UP_KEY
    labels: {{origin: us}}
    pricing: {{input_usd_per_mtok: {in_usd}, output_usd_per_mtok: {out_usd}}}
    retry: {{max_attempts: 1}}
  gpt:
    kind: openai_compatible
    base_url: {gpt}
    model: gpt-5-mini
    api_key: os.environ/GPT_KEY
    native_protocols: [responses]
    labels: {{origin: us}}
    pricing: {{input_usd_per_mtok: {in_usd}, output_usd_per_mtok: {out_usd}}}
    retry: {{max_attempts: 1}}
  gpt4o:  # opted in, but gpt-4o does not reason (litellm's map): reasoning asked is translated
    kind: openai_compatible
    base_url: {gpt}
    model: gpt-4o
    api_key: os.environ/GPT_KEY
    native_protocols: [responses]
    labels: {{origin: us}}
    retry: {{max_attempts: 1}}
  claude-plain:  # declared a model without extended thinking
    kind: litellm
    model: anthropic/claude-sonnet-4-5
    base_url: {anthropic}
    api_key: os.environ/UP_KEY
    capabilities: {{reasoning: false}}
    labels: {{origin: us}}
    pricing: {{input_usd_per_mtok: {in_usd}, output_usd_per_mtok: {out_usd}}}
    retry: {{max_attempts: 1}}
  claude-map:  # no pricing: litellm's map, cache reads and writes priced apart
    kind: litellm
    model: anthropic/claude-sonnet-4-5
    base_url: {anthropic}
    api_key: os.environ/UP_KEY
    labels: {{origin: us}}
    retry: {{max_attempts: 1}}
  claude-cache:  # the policy's own cache prices
    kind: litellm
    model: anthropic/claude-sonnet-4-5
    base_url: {anthropic}
    api_key: os.environ/UP_KEY
    labels: {{origin: us}}
    pricing:
      input_usd_per_mtok: {in_usd}
      output_usd_per_mtok: {out_usd}
      cache_read_usd_per_mtok: {read_usd}
      cache_write_usd_per_mtok: {write_usd}
    retry: {{max_attempts: 1}}
  claude-count:  # its circuit opens after 2 failures: count_tokens must leave it alone
    kind: litellm
    model: anthropic/claude-sonnet-4-5
    base_url: {anthropic}
    api_key: os.environ/UP_KEY
    circuit_breaker: {{failure_threshold: 2, cooldown_s: {cooldown_s}}}
    retry: {{max_attempts: 1}}
models:
  auto:
    rules:
      - {{name: to-claude, when: {{headers: {{x-route: claude}}}}, route: [claude, local]}}
      - {{name: to-gpt, when: {{headers: {{x-route: gpt}}}}, route: [gpt, local]}}
      - {{name: to-gpt4o, when: {{headers: {{x-route: gpt4o}}}}, route: [gpt4o, local]}}
      - {{name: to-plain, when: {{headers: {{x-route: claude-plain}}}}, route: [claude-plain]}}
      - {{name: to-map, when: {{headers: {{x-route: claude-map}}}}, route: [claude-map]}}
      - {{name: to-cache, when: {{headers: {{x-route: claude-cache}}}}, route: [claude-cache]}}
      - {{name: to-count, when: {{headers: {{x-route: claude-count}}}}, route: [claude-count, local]}}
      - {{name: everyday, route: local}}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with (
        fresh_database() as db,
        running_mock_openai() as (local, lctl),
        running_mock_openai() as (gpt, gctl),
        running_mock_anthropic() as (ant, actl),
    ):
        actl.api_key, gctl.api_key = UP_KEY, GPT_KEY  # the mocks check the upstream keys
        env = {
            "KEY": KEY,
            "THRIFTY_KEY": THRIFTY_KEY,
            "FRUGAL_KEY": FRUGAL_KEY,
            "UP_KEY": UP_KEY,
            "GPT_KEY": GPT_KEY,
        }
        with serving(
            tmp_path_factory.mktemp("native"),
            db,
            env,
            POLICY.format,
            local=local,
            anthropic=ant,
            gpt=gpt,
            in_usd=IN_USD,
            out_usd=OUT_USD,
            read_usd=READ_USD,
            write_usd=WRITE_USD,
            ref_in=REF_USD[0],
            ref_out=REF_USD[1],
            ref_read=REF_USD[2],
            ref_write=REF_USD[3],
            cooldown_s=COUNT_COOLDOWN_S,
        ) as url:
            yield {"url": url, "db": db, "local": lctl, "gpt": gctl, "anthropic": actl}


@pytest.fixture(autouse=True)
def _fresh(stack):
    for ctl in ("local", "gpt", "anthropic"):
        stack[ctl].reset()


def _anthropic(
    stack, route: str | None = "claude", key: str = KEY, **headers: str
) -> anthropic.Anthropic:
    hdrs = {"anthropic-beta": BETA, **headers}
    if route:
        hdrs["x-route"] = route
    return anthropic.Anthropic(
        base_url=stack["url"], api_key=key, max_retries=0, default_headers=hdrs
    )


def _openai(stack, route: str | None = "gpt", key: str = KEY, **headers: str) -> openai.OpenAI:
    hdrs = {"x-route": route, **headers} if route else headers
    return openai.OpenAI(
        base_url=stack["url"] + "/v1", api_key=key, max_retries=0, default_headers=hdrs
    )


def _cost(prompt: int, completion: int) -> float:
    return (prompt * IN_USD + completion * OUT_USD) / 1e6


# A conversation with everything translation drops: thinking (and a signed thinking block of an
# earlier turn), cache_control markers on the system prompt and a user block.
MESSAGES_KW = {
    "model": "auto",
    "max_tokens": 2048,
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": "first question"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "earlier thought", "signature": "sig_earlier"},
                {"type": "text", "text": "first answer"},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "second question", "cache_control": {"type": "ephemeral"}}
            ],
        },
    ],
}


# ---------------------------------------------------------------- Anthropic -> Anthropic


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_and_cache_control_pass_through(stack, stream):
    calls = metric(stack["url"], "gateway_requests_total", backend="claude", protocol="anthropic")
    prompt0 = metric(stack["url"], "gateway_prompt_tokens_total", backend="claude")
    with _anthropic(stack) as client:
        if stream:
            with client.messages.stream(**copy.deepcopy(MESSAGES_KW)) as s:
                kinds = [e.type for e in s]
                msg = s.get_final_message()
                headers = s.response.headers
            assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
            assert "thinking" in kinds and "signature" in kinds  # the SDK's delta events
        else:
            raw = client.messages.with_raw_response.create(**copy.deepcopy(MESSAGES_KW))
            msg, headers = raw.parse(), raw.headers
    # the upstream got the caller's body, only the model replaced
    [rec] = stack["anthropic"].requests
    assert rec.path == "/v1/messages" and rec.auth_ok  # the backend's key, as x-api-key
    sent = dict(rec.body)
    assert sent.pop("model") == "claude-sonnet-4-5"
    assert sent.pop("stream", False) is stream
    assert sent == {k: v for k, v in MESSAGES_KW.items() if k != "model"}
    assert rec.headers["anthropic-beta"] == BETA and rec.headers["anthropic-version"]
    assert not stack["local"].requests
    # ... and the caller the upstream's answer: the signed thinking block comes back
    think, text = msg.content
    assert think.type == "thinking" and think.signature == SIGNATURE
    assert think.thinking == "mock thought about second question"
    assert text.type == "text" and text.text == "echo: second question"
    assert msg.model == "claude-sonnet-4-5" and msg.usage.cache_read_input_tokens == CACHED
    assert headers["x-gateway-backend"] == "claude" and headers["x-gateway-native"] == "anthropic"
    assert headers["x-gateway-route-reason"] == "to-claude"
    assert msg.usage.cache_creation_input_tokens == WRITTEN
    # Anthropic counts cached prompt tokens apart; this backend's pricing has one input price
    prompt = msg.usage.input_tokens + CACHED + WRITTEN
    if not stream:  # a stream's header carries the gateway's prompt estimate only
        assert float(headers["x-gateway-cost-usd"]) == pytest.approx(
            _cost(prompt, msg.usage.output_tokens)
        )
    labels = {"backend": "claude", "protocol": "anthropic"}
    assert eventually(lambda: metric(stack["url"], "gateway_requests_total", **labels) == calls + 1)
    assert eventually(  # usage read from the answer (stream: from its events)
        lambda: (
            metric(stack["url"], "gateway_prompt_tokens_total", backend="claude")
            == prompt0 + prompt
        )
    )


def test_tool_use_round_trip_natively(stack):
    tool = {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    with _anthropic(stack) as client:
        first = client.messages.create(
            model="auto",
            max_tokens=64,
            tools=[tool],
            messages=[{"role": "user", "content": "Paris"}],
        )
        [use] = first.content
        assert first.stop_reason == "tool_use" and use.input == {"echo": "Paris"}
        second = client.messages.create(
            model="auto",
            max_tokens=64,
            tools=[tool],
            tool_choice={"type": "none"},
            messages=[
                {"role": "user", "content": "Paris"},
                {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": use.id, "content": "sun"},
                        {"type": "text", "text": "and now?"},
                    ],
                },
            ],
        )
    assert second.content[0].text == "echo: and now?"
    last = stack["anthropic"].bodies("/v1/messages")[-1]
    assert last["messages"][2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": use.id,
        "content": "sun",
    }


def test_native_errors_in_the_callers_shape_without_the_key(stack):
    leaky = json.dumps(
        {"type": "error", "error": {"type": "invalid_request_error", "message": f"bad {UP_KEY}"}}
    ).encode()
    stack["anthropic"].fail_next(1, status=400, body=leaky)
    with _anthropic(stack) as client:
        with pytest.raises(anthropic.BadRequestError) as e:
            client.messages.create(**copy.deepcopy(MESSAGES_KW))
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert UP_KEY not in json.dumps(e.value.body) and "bad" in e.value.body["error"]["message"]
    assert not stack["local"].requests  # the upstream judged the request: no fallback
    # broken after the first event: the stream ends with Anthropic's error event
    stack["anthropic"].break_stream_next(after_events=3)
    body = {**copy.deepcopy(MESSAGES_KW), "stream": True}
    with httpx.stream(
        "POST",
        stack["url"] + "/v1/messages",
        json=body,
        headers={"x-api-key": KEY, "x-route": "claude"},
    ) as r:
        text = r.read().decode()
    assert r.status_code == 200 and r.headers["x-gateway-native"] == "anthropic"
    assert "event: message_start" in text and "event: error" in text
    assert "message_stop" not in text and UP_KEY not in text


@pytest.mark.parametrize("stream", [False, True])
def test_fallback_from_a_failing_native_backend_translates(stack, stream):
    stack["anthropic"].fail_next(1, status=500)
    with _anthropic(stack) as client:
        if stream:
            with client.messages.stream(**copy.deepcopy(MESSAGES_KW)) as s:
                kinds = [e.type for e in s]
                msg = s.get_final_message()
                headers = s.response.headers
            assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
        else:
            raw = client.messages.with_raw_response.create(**copy.deepcopy(MESSAGES_KW))
            msg, headers = raw.parse(), raw.headers
    assert len(stack["anthropic"].requests) == 1  # tried natively, failed
    assert headers["x-gateway-backend"] == "local" and "x-gateway-native" not in headers
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == (
        "echo: second question"
    )
    [chat] = stack["local"].bodies("/chat/completions")  # translated for the chat backend
    assert chat["model"] == "qwen-local" and chat["messages"][0]["content"] == "You are terse."
    assert "thinking" not in chat and "cache_control" not in json.dumps(chat)


def test_native_answers_bypass_the_cache(stack):
    """A native answer is not a chat completion: never looked up nor stored (a translated
    answer would lose what native keeps). The same request to the chat backend is cached."""
    kw = {**copy.deepcopy(MESSAGES_KW), "extra_body": {"temperature": 0}}
    with _anthropic(stack) as client:
        heads = [client.messages.with_raw_response.create(**kw).headers for _ in range(2)]
    assert [h["x-gateway-cache"] for h in heads] == ["bypass", "bypass"]
    assert len(stack["anthropic"].requests) == 2
    with _anthropic(stack, route=None) as client:
        heads = [client.messages.with_raw_response.create(**kw).headers for _ in range(2)]
    assert [h["x-gateway-cache"] for h in heads] == ["miss", "hit"]
    assert len(stack["local"].requests) == 1
    with _anthropic(stack) as client:  # cached now, but the first choice answers natively
        assert client.messages.with_raw_response.create(**kw).headers["x-gateway-native"]
    assert len(stack["anthropic"].requests) == 3


def _map_prices(model: str) -> tuple[float, float, float, float]:
    """(input, output, cache read, cache write) USD per token, from litellm's local map."""
    e = lookup_model(model)
    assert e is not None
    return (
        float(e["input_cost_per_token"]),
        float(e["output_cost_per_token"]),
        float(e["cache_read_input_token_cost"]),
        float(e["cache_creation_input_token_cost"]),
    )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("backend", ["claude-map", "claude-cache"])
def test_cache_reads_and_writes_at_their_own_prices(stack, backend, stream):
    """Anthropic's cache_read_input_tokens and cache_creation_input_tokens are charged at the
    backend's cache prices (litellm's map, or the policy's), not its input price: in the cost
    header, the spend counter and the ledger row; the savings price the same tokens at the
    reference model's cache prices."""
    if backend == "claude-map":
        p_in, p_out, p_read, p_write = _map_prices("anthropic/claude-sonnet-4-5")
        assert p_read < p_in < p_write  # so a single price would be wrong both ways
    else:
        p_in, p_out, p_read, p_write = (v / 1e6 for v in (IN_USD, OUT_USD, READ_USD, WRITE_USD))
    spent0 = metric(stack["url"], "gateway_cost_usd_total", backend=backend)
    with _anthropic(stack, route=backend) as client:
        if stream:
            with client.messages.stream(**copy.deepcopy(MESSAGES_KW)) as s:
                msg = s.get_final_message()
                headers = s.response.headers
        else:
            raw = client.messages.with_raw_response.create(**copy.deepcopy(MESSAGES_KW))
            msg, headers = raw.parse(), raw.headers
    u = msg.usage
    assert headers["x-gateway-native"] == "anthropic" and headers["x-gateway-backend"] == backend
    assert (u.cache_read_input_tokens, u.cache_creation_input_tokens) == (CACHED, WRITTEN)
    want = u.input_tokens * p_in + CACHED * p_read + WRITTEN * p_write + u.output_tokens * p_out
    single = (u.input_tokens + CACHED + WRITTEN) * p_in + u.output_tokens * p_out
    assert want != pytest.approx(single)
    if not stream:  # a stream's header carries the gateway's prompt estimate only
        assert float(headers["x-gateway-cost-usd"]) == pytest.approx(want, rel=1e-6)
    assert eventually(
        lambda: (
            metric(stack["url"], "gateway_cost_usd_total", backend=backend)
            == pytest.approx(spent0 + want, rel=1e-6)
        )
    )
    rid = headers["x-gateway-request-id"]
    row = ledger_rows(stack["db"], [rid])[rid.replace("-", "")]
    assert row["cost_usd"] == pytest.approx(want, rel=1e-6)
    assert row["prompt_tokens"] == u.input_tokens + CACHED + WRITTEN
    assert (row["cached_tokens"], row["cache_write_tokens"]) == (CACHED, WRITTEN)
    r_in, r_out, r_read, r_write = (v / 1e6 for v in REF_USD)
    ref = u.input_tokens * r_in + CACHED * r_read + WRITTEN * r_write + u.output_tokens * r_out
    ref_single = (u.input_tokens + CACHED + WRITTEN) * r_in + u.output_tokens * r_out
    assert ref > want and ref != pytest.approx(ref_single)
    assert row["savings_usd"] == pytest.approx(ref - want, rel=1e-6)


# ---------------------------------------------------------------- count_tokens


COUNT_KW = {k: v for k, v in MESSAGES_KW.items() if k != "max_tokens"}


def _count(client: anthropic.Anthropic, kw: dict = COUNT_KW) -> tuple[int, httpx.Headers]:
    raw = client.messages.with_raw_response.count_tokens(**copy.deepcopy(kw))
    return raw.parse().input_tokens, raw.headers


def _counted(stack, backend: str, outcome: str) -> float:
    return metric(
        stack["url"], "gateway_token_count_requests_total", backend=backend, outcome=outcome
    )


def test_count_tokens_is_the_native_backends_own(stack):
    """Routed to a native Anthropic backend, count_tokens is the upstream's answer to the
    caller's body (only the model replaced); routed elsewhere, the gateway's estimate. The
    metric counts each by the backend the policy chose and the outcome."""
    before = {
        k: _counted(stack, *k)
        for k in (("claude", "upstream"), ("local", "estimate"), ("none", "estimate"))
    }
    with _anthropic(stack) as client:
        n, headers = _count(client)
    [rec] = stack["anthropic"].requests
    assert rec.path == "/v1/messages/count_tokens" and rec.auth_ok
    assert rec.body == {**COUNT_KW, "model": "claude-sonnet-4-5"}  # thinking, cache_control kept
    assert rec.headers["anthropic-beta"] == BETA
    assert n == count_of(rec.body)
    assert (
        headers["x-gateway-token-count"] == "upstream" and headers["x-gateway-backend"] == "claude"
    )
    with _anthropic(stack, route=None) as client:  # the everyday rule: the self-hosted backend
        estimate, headers = _count(client)
    assert headers["x-gateway-token-count"] == "estimate" and "x-gateway-backend" not in headers
    assert estimate != n and estimate > 0
    assert len(stack["anthropic"].requests) == 1 and not stack["local"].requests
    with _anthropic(stack) as client:  # a model the policy does not have: no backend
        _, headers = _count(client, {**COUNT_KW, "model": "no-such-model"})
    assert headers["x-gateway-token-count"] == "estimate"
    after = {k: _counted(stack, *k) for k in before}
    assert {k: after[k] - before[k] for k in before} == {
        ("claude", "upstream"): 1,
        ("local", "estimate"): 1,
        ("none", "estimate"): 1,
    }
    assert _counted(stack, "claude", "estimate") == 0


def test_count_tokens_leaves_the_circuit_to_real_traffic(stack):
    """Failed counts never open a backend's circuit (and are not retried); an open circuit
    routes the count elsewhere; a half-open one keeps its probe for a real request."""
    ant = stack["anthropic"]
    with _anthropic(stack, route="claude-count") as client:
        est0 = _counted(stack, "claude-count", "estimate")
        ant.fail_next(3, status=500)  # more failed counts than the circuit's threshold (2)
        for _ in range(3):
            _, headers = _count(client)
            assert headers["x-gateway-token-count"] == "estimate"
        assert len(ant.bodies("/count_tokens")) == 3  # one call each: no retries
        assert _counted(stack, "claude-count", "estimate") == est0 + 3
        raw = client.messages.with_raw_response.create(**copy.deepcopy(MESSAGES_KW))
        assert raw.headers["x-gateway-backend"] == "claude-count"  # still closed
        # real traffic failing opens it: requests fall back to local, and so does the count
        ant.fail_next(2, status=500)
        for _ in range(2):
            raw = client.messages.with_raw_response.create(**copy.deepcopy(MESSAGES_KW))
            assert raw.headers["x-gateway-backend"] == "local"
        ant.reset()
        local0 = _counted(stack, "local", "estimate")
        _, headers = _count(client)
        assert headers["x-gateway-token-count"] == "estimate"
        assert _counted(stack, "local", "estimate") == local0 + 1
        assert ant.requests == []
        time.sleep(COUNT_COOLDOWN_S + 0.2)  # half-open: the next real request is the probe
        est1 = _counted(stack, "claude-count", "estimate")
        _, headers = _count(client)
        assert headers["x-gateway-token-count"] == "estimate" and ant.requests == []
        assert _counted(stack, "claude-count", "estimate") == est1 + 1
        raw = client.messages.with_raw_response.create(**copy.deepcopy(MESSAGES_KW))
        assert raw.headers["x-gateway-backend"] == "claude-count"  # the probe: closed again
        up0 = _counted(stack, "claude-count", "upstream")
        _, headers = _count(client)
        assert headers["x-gateway-token-count"] == "upstream"
        assert _counted(stack, "claude-count", "upstream") == up0 + 1


def test_count_tokens_falls_back_to_the_estimate(stack):
    with _anthropic(stack, route=None) as client:
        estimate, _ = _count(client)
    with _anthropic(stack) as client:
        stack["anthropic"].fail_next(1, status=500)
        n, headers = _count(client)
        assert (n, headers["x-gateway-token-count"]) == (estimate, "estimate")
        stack["anthropic"].fail_next(1, status=400)  # a refusal too: the estimate, not an error
        n, headers = _count(client)
        assert (n, headers["x-gateway-token-count"]) == (estimate, "estimate")
    with _anthropic(stack, route="claude-plain") as client:  # thinking, on a model without it
        n, headers = _count(client)
        assert (n, headers["x-gateway-token-count"]) == (estimate, "estimate")
        kw = {k: v for k, v in COUNT_KW.items() if k != "thinking"}
        n, headers = _count(client, kw)
        assert headers["x-gateway-token-count"] == "upstream" and n != estimate
    assert len(stack["anthropic"].requests) == 3


@pytest.mark.parametrize(
    "marker",
    [
        {"headers": {"x-data-classification": "CONFIDENTIAL"}},
        {"metadata": {"data_classification": "confidential"}},
        {"headers": {"x-data-residency": "eu"}},
    ],
    ids=["confidential-header", "confidential-metadata", "eu-residency"],
)
def test_count_tokens_never_sends_data_that_must_stay_home(stack, marker):
    with _anthropic(stack, **marker.get("headers", {})) as client:
        extra = {"extra_body": {"metadata": marker["metadata"]}} if "metadata" in marker else {}
        n, headers = _count(client, {**COUNT_KW, **extra})
    assert headers["x-gateway-token-count"] == "estimate" and n > 0
    assert stack["anthropic"].requests == [] and stack["local"].requests == []


def test_count_tokens_of_a_team_past_its_budget_is_the_estimate(stack):
    """Past the budget the request would stay self-hosted: its count is not Anthropic's."""
    with _anthropic(stack, key=FRUGAL_KEY) as client:
        _, headers = _count(client)  # within budget: counted upstream, costs nothing
        assert headers["x-gateway-token-count"] == "upstream"
        client.messages.create(**copy.deepcopy(MESSAGES_KW))
        assert eventually(
            lambda: (
                samples(stack["url"], "gateway_budget_remaining_usd", scope="team:frugal") == [0.0]
            )
        )
        stack["anthropic"].reset()
        _, headers = _count(client)
    assert headers["x-gateway-token-count"] == "estimate" and stack["anthropic"].requests == []


# ---------------------------------------------------------------- Responses -> Responses


REASONING_KW = {
    "model": "auto",
    "input": "think about tea",
    "reasoning": {"effort": "low", "summary": "auto"},
    "include": ["reasoning.encrypted_content"],
    "store": False,
}


def _responses_call(client: openai.OpenAI, stream: bool, **kw):
    """(final response, response headers) by the SDK, streamed or not."""
    if not stream:
        raw = client.responses.with_raw_response.create(**kw)
        return raw.parse(), raw.headers
    events = client.responses.create(stream=True, **kw)
    kinds, final = [], None
    for e in events:
        kinds.append(e.type)
        if e.type == "response.completed":
            final = e.response
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    return final, events.response.headers


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_item_survives_a_responses_round_trip(stack, stream):
    with _openai(stack) as client:
        first, headers = _responses_call(client, stream, **REASONING_KW)
        reasoning, message = first.output
        assert reasoning.type == "reasoning" and reasoning.encrypted_content.startswith("enc_mock")
        assert first.output_text == "echo: think about tea"
        assert headers["x-gateway-native"] == "responses" and headers["x-gateway-backend"] == "gpt"
        returned = [it.model_dump(exclude_none=True) for it in first.output]
        second, _ = _responses_call(
            client,
            stream,
            **{
                **REASONING_KW,
                "input": [
                    {"role": "user", "content": "think about tea"},
                    *returned,
                    {"role": "user", "content": "and cake"},
                ],
            },
        )
    assert second.output_text == "echo: and cake"
    recs = stack["gpt"].requests
    assert [r.path for r in recs] == ["/v1/responses"] * 2 and all(r.auth_ok for r in recs)
    sent = recs[1].body
    assert sent["model"] == "gpt-5-mini" and sent["reasoning"] == REASONING_KW["reasoning"]
    assert sent["input"][1] == returned[0]  # the reasoning item, encrypted content and all
    assert sent["input"][1]["encrypted_content"] == reasoning.encrypted_content
    assert not stack["local"].requests


def test_previous_response_id_on_a_native_backend(stack):
    """The gateway keeps the conversation (the next turn may go to another backend): a native
    backend gets it expanded in front of ``input``, reasoning items included."""
    with _openai(stack) as client:
        first = client.responses.create(
            model="auto", input="remember tea", reasoning={"effort": "low"}
        )
        second = client.responses.create(
            model="auto", input="and cake", previous_response_id=first.id
        )
        assert second.output_text == "echo: and cake"
        assert client.responses.retrieve(first.id).output_text == "echo: remember tea"
        with _openai(stack, route=None) as local_client:  # the everyday rule: translated
            third = local_client.responses.create(
                model="auto", input="and jam", previous_response_id=second.id
            )
    assert third.output_text == "echo: and jam"
    sent = stack["gpt"].requests[1].body
    assert "previous_response_id" not in sent
    kinds = [it.get("type", "message") for it in sent["input"]]
    assert kinds == ["message", "reasoning", "message", "message"]
    assert sent["input"][1]["id"] == first.output[0].id
    assert sent["input"][3] == {"role": "user", "content": "and cake"}
    [chat] = stack["local"].bodies("/chat/completions")
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant"] * 2 + ["user"]


@pytest.mark.parametrize("stream", [False, True])
def test_responses_fallback_to_a_chat_backend_translates(stack, stream):
    stack["gpt"].fail_next(1, status=503)
    with _openai(stack) as client:
        final, headers = _responses_call(client, stream, **REASONING_KW)
    assert headers["x-gateway-backend"] == "local" and "x-gateway-native" not in headers
    assert [it.type for it in final.output] == ["message"]
    assert final.output_text == "echo: think about tea"
    assert len(stack["gpt"].requests) == 1 and len(stack["local"].requests) == 1


def test_native_responses_error_is_an_openai_exception(stack):
    stack["gpt"].fail_next(1, status=400)
    with _openai(stack) as client:
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(**REASONING_KW)
    assert GPT_KEY not in str(e.value.body)


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_asked_of_a_model_that_refuses_it_is_translated(stack, stream):
    """gpt-4o answers 400 to ``reasoning`` (as Codex sends it): a native backend whose model
    does not reason gets such a request translated (the field dropped), not a 400; a request
    without reasoning still goes natively. No 400 is retried: none is provoked."""
    with _openai(stack, route="gpt4o") as client:
        final, headers = _responses_call(client, stream, **REASONING_KW)
        assert headers["x-gateway-backend"] == "gpt4o" and "x-gateway-native" not in headers
        assert final.output_text == "echo: think about tea"
        [chat] = stack["gpt"].requests
        assert chat.path == "/v1/chat/completions" and chat.body["model"] == "gpt-4o"
        assert "reasoning" not in chat.body
        plain = {"model": "auto", "input": "hello tea", "store": False}
        final, headers = _responses_call(client, stream, **plain)
    assert headers["x-gateway-native"] == "responses" and final.output_text == "echo: hello tea"
    assert [r.path for r in stack["gpt"].requests] == ["/v1/chat/completions", "/v1/responses"]
    assert not stack["local"].requests


def test_thinking_asked_of_a_backend_declared_without_it_is_translated(stack):
    with _anthropic(stack, route="claude-plain") as client:
        raw = client.messages.with_raw_response.create(**copy.deepcopy(MESSAGES_KW))
        msg = raw.parse()
        assert "x-gateway-native" not in raw.headers
        assert [b.type for b in msg.content] == ["text"]
        [rec] = stack["anthropic"].requests  # through litellm: no thinking, no cache_control
        assert "thinking" not in rec.body and rec.body["model"] == "claude-sonnet-4-5"
        kw = {k: v for k, v in copy.deepcopy(MESSAGES_KW).items() if k != "thinking"}
        kw["messages"] = kw["messages"][-1:]
        raw = client.messages.with_raw_response.create(**kw)
    assert raw.headers["x-gateway-native"] == "anthropic"
    assert stack["anthropic"].requests[-1].body["system"] == MESSAGES_KW["system"]


# ---------------------------------------------------------------- policy binds native calls


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "marker",
    [{"x-data-classification": "Confidential"}, {"x-data-residency": "eu"}],
    ids=["confidential", "eu-residency"],
)
def test_data_rules_keep_native_callers_home(stack, marker, stream):
    """Routed to a native proprietary backend by the model's rule, bound home by a data rule:
    served on the self-hosted backend (translated), and when that one fails, refused in the
    caller's shape: never a request at the proprietary mocks."""
    with _anthropic(stack, **marker) as ac, _openai(stack, **marker) as oc:
        if stream:
            with ac.messages.stream(**copy.deepcopy(MESSAGES_KW)) as s:
                msg = s.get_final_message()
                headers = s.response.headers
        else:
            raw = ac.messages.with_raw_response.create(**copy.deepcopy(MESSAGES_KW))
            msg, headers = raw.parse(), raw.headers
        assert headers["x-gateway-backend"] == "local" and "x-gateway-native" not in headers
        assert msg.content[0].text == "echo: second question"
        resp, rheaders = _responses_call(oc, stream, **REASONING_KW)
        assert rheaders["x-gateway-backend"] == "local" and resp.output_text.startswith("echo")
        # the self-hosted backend faults: no way out to the proprietary ones
        stack["local"].fail_next(2, status=500)
        with pytest.raises(anthropic.APIStatusError) as ae:
            if stream:
                with ac.messages.stream(**copy.deepcopy(MESSAGES_KW)) as s:
                    s.get_final_message()
            else:
                ac.messages.create(**copy.deepcopy(MESSAGES_KW))
        assert ae.value.body["type"] == "error"
        with pytest.raises(openai.APIStatusError):
            _responses_call(oc, stream, **REASONING_KW)
    assert stack["anthropic"].requests == [] and stack["gpt"].requests == []
    assert len(stack["local"].requests) == 4


def test_metadata_residency_binds_a_native_responses_caller(stack):
    with _openai(stack) as client:
        r = client.responses.create(**{**REASONING_KW, "metadata": {"data_residency": "eu"}})
    assert r.output_text == "echo: think about tea" and stack["gpt"].requests == []


def test_native_spend_counts_against_the_team_budget(stack):
    """A native answer's cost (from its usage) is charged like any other: past the team's
    budget, the next turn stays self-hosted, in either protocol."""
    with _anthropic(stack, key=THRIFTY_KEY) as ac, _openai(stack, key=THRIFTY_KEY) as oc:
        first = ac.messages.with_raw_response.create(**copy.deepcopy(MESSAGES_KW))
        assert first.headers["x-gateway-native"] == "anthropic"
        assert float(first.headers["x-gateway-cost-usd"]) > 0.00001
        # the spend is charged once the answer is out: wait until the team's budget shows it
        assert eventually(
            lambda: (
                samples(stack["url"], "gateway_budget_remaining_usd", scope="team:thrifty") == [0.0]
            )
        )
        second = ac.messages.with_raw_response.create(**copy.deepcopy(MESSAGES_KW))
        assert second.headers["x-gateway-backend"] == "local"
        third = oc.responses.with_raw_response.create(**REASONING_KW)
        assert third.headers["x-gateway-backend"] == "local"
    assert len(stack["anthropic"].requests) == 1 and stack["gpt"].requests == []


def test_native_answers_in_the_ledger(stack):
    """One row per native request, with the caller's protocol, the backend and the usage read
    from the upstream's answer (or, streamed, its events)."""
    with _anthropic(stack) as ac, _openai(stack) as oc:
        raw = ac.messages.with_raw_response.create(**copy.deepcopy(MESSAGES_KW))
        msg = raw.parse()
        events = oc.responses.create(stream=True, **REASONING_KW)
        final = next(e.response for e in events if e.type == "response.completed")
    ids = [raw.headers["x-gateway-request-id"], events.response.headers["x-gateway-request-id"]]
    rows = ledger_rows(stack["db"], ids)
    a, r = rows[ids[0].replace("-", "")], rows[ids[1].replace("-", "")]
    assert (a["protocol"], a["backend"], a["model"]) == (
        "anthropic",
        "claude",
        "anthropic/claude-sonnet-4-5",
    )
    assert a["prompt_tokens"] == msg.usage.input_tokens + CACHED + WRITTEN
    assert a["cached_tokens"] == CACHED and a["completion_tokens"] == msg.usage.output_tokens
    assert a["cache_write_tokens"] == WRITTEN
    assert a["cost_usd"] == pytest.approx(float(raw.headers["x-gateway-cost-usd"]))
    assert not a["self_hosted"] and a["rule"] == "to-claude" and a["status"] == 200
    assert (r["protocol"], r["backend"], r["stream"]) == ("responses", "gpt", True)
    assert r["prompt_tokens"] == final.usage.input_tokens
    assert r["completion_tokens"] == final.usage.output_tokens
    assert r["cost_usd"] == pytest.approx(
        _cost(final.usage.input_tokens, final.usage.output_tokens)
    )


def test_native_responses_stream_cut_ends_with_an_error_numbered_after_it(stack):
    stack["gpt"].break_stream_next(after_events=4)
    body = {**REASONING_KW, "stream": True}
    with httpx.stream(
        "POST",
        stack["url"] + "/v1/responses",
        json=body,
        headers={"authorization": f"Bearer {KEY}", "x-route": "gpt"},
    ) as r:
        text = r.read().decode()
    assert r.status_code == 200 and r.headers["x-gateway-native"] == "responses"
    datas = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert [d["type"] for d in datas][-1] == "error" and len(datas) == 5
    assert [d["sequence_number"] for d in datas] == list(range(5))
    assert "response.completed" not in text and GPT_KEY not in text
