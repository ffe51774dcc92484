"""Anthropic Messages and OpenAI Responses through the gateway, with the official SDKs.

The official ``anthropic`` SDK and the ``openai`` SDK's Responses client -> the real gateway
(uvicorn) -> a loopback OpenAI-compatible mock (self-hosted) or, through litellm's real
translation, a loopback Anthropic Messages mock. Streamed and not, tool round trips, errors
as each SDK's exception types, stored responses across two gateway replicas sharing Redis.
"""

from __future__ import annotations

import json
import uuid

import anthropic
import httpx
import openai
import pytest

from tests.gateway.gateway_server import running_gateway
from tests.support.mock_anthropic import running_mock_anthropic
from tests.support.mock_openai import TOOL_CALL_ID, running_mock_openai
from tests.support.policy import NO_RETRY, anthropic_backend, client_key, local_backend, policy_yaml

KEY_A = "gw-proto-key-ALPHA"
KEY_B = "gw-proto-key-BRAVO"
UP_KEY = "sk-ant-proto-upstream-SECRET"


def _policy(local: str, anthropic: str, ns: str) -> str:
    keys = [client_key("alpha", "KEY_A", "alpha"), client_key("bravo", "KEY_B", "bravo")]
    caps = {"context_window": 32768, "vision": True, "tools": True, "json_schema": True}
    rules = [
        {"name": "to-claude", "when": {"headers": {"x-route": "claude"}}, "route": "claude"},
        {"name": "everyday", "route": "local"},
    ]
    return policy_yaml(
        auth={"keys": keys},
        cache={"enabled": False, "namespace": ns},
        state_redis_url="redis://127.0.0.1:6379/0",
        backends={
            "local": local_backend(
                local,
                pricing={"gpu_usd_per_hour": 3.6, "tokens_per_second": 1000},
                capabilities=caps,
                retry=NO_RETRY,
            ),
            # translated through litellm (tests/gateway/test_protocols_native.py: native)
            "claude": anthropic_backend(
                anthropic, api_key="os.environ/UP_KEY", native_protocols=[], retry=NO_RETRY
            ),
        },
        models={"auto": {"rules": rules}},
    )


WEATHER_ANTHROPIC = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
WEATHER_RESPONSES = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    ns = f"proto-{uuid.uuid4().hex[:8]}"
    with running_mock_openai() as (local, lctl), running_mock_anthropic() as (ant, actl):
        path = tmp_path_factory.mktemp("proto") / "policy.yaml"
        path.write_text(_policy(local, ant, ns))
        env = {"KEY_A": KEY_A, "KEY_B": KEY_B, "UP_KEY": UP_KEY}
        with running_gateway(path, env) as (url, _app), running_gateway(path, env) as (url2, _):
            yield {"url": url, "url2": url2, "local": lctl, "anthropic": actl}


def _anthropic(stack, key=KEY_A, **kw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack["url"], api_key=key, max_retries=0, **kw)


def _openai(stack, key=KEY_A, url="url") -> openai.OpenAI:
    return openai.OpenAI(base_url=stack[url] + "/v1", api_key=key, max_retries=0)


# ---------------------------------------------------------------- Anthropic Messages


def test_messages_whole_with_system_and_turns(stack):
    stack["local"].reset()
    with _anthropic(stack) as client:
        raw = client.messages.with_raw_response.create(
            model="auto",
            max_tokens=64,
            system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            messages=[
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hi"},
                {"role": "user", "content": [{"type": "text", "text": "what is up"}]},
            ],
            stop_sequences=["END"],
            metadata={"user_id": "u-1"},
            extra_body={"temperature": 0.2, "top_k": 5},  # this SDK version has no kwargs for them
        )
        msg = raw.parse()
    assert raw.headers["x-gateway-backend"] == "local"
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "auto"
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: what is up"
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0
    [sent] = stack["local"].bodies("/chat/completions")
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["stop"] == ["END"] and sent["max_tokens"] == 64 and sent["user"] == "u-1"
    assert sent["temperature"] == 0.2 and sent["top_k"] == 5


def test_messages_stream_event_sequence(stack):
    with _anthropic(stack) as client:
        with client.messages.stream(
            model="auto", max_tokens=32, messages=[{"role": "user", "content": "one two three"}]
        ) as s:
            kinds = [e.type for e in s]
            final = s.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert "message_delta" in kinds and kinds.count("text") >= 3
    assert final.content[0].text == "echo: one two three"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4


@pytest.mark.parametrize("stream", [False, True])
def test_messages_tool_round_trip(stack, stream):
    stack["local"].reset()
    first_kw = dict(
        model="auto",
        max_tokens=64,
        tools=[WEATHER_ANTHROPIC],
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Paris"}],
    )
    with _anthropic(stack) as client:
        if stream:
            with client.messages.stream(**first_kw) as s:
                first = s.get_final_message()
        else:
            first = client.messages.create(**first_kw)
        assert first.stop_reason == "tool_use"
        [use] = [b for b in first.content if b.type == "tool_use"]
        assert (
            use.id == TOOL_CALL_ID and use.name == "get_weather" and use.input == {"echo": "Paris"}
        )
        second = client.messages.create(
            model="auto",
            max_tokens=64,
            tools=[WEATHER_ANTHROPIC],
            tool_choice={"type": "none"},
            messages=[
                {"role": "user", "content": "Paris"},
                {"role": "assistant", "content": first.content},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": use.id, "content": "sunny"},
                        {"type": "text", "text": "and now?"},
                    ],
                },
            ],
        )
    assert second.content[0].text == "echo: and now?"
    sent = stack["local"].bodies("/chat/completions")[-1]
    assert sent["tool_choice"] == "none"
    assert sent["messages"][1]["tool_calls"][0]["id"] == TOOL_CALL_ID
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": TOOL_CALL_ID, "content": "sunny"}
    assert sent["tools"][0]["function"]["parameters"] == WEATHER_ANTHROPIC["input_schema"]


def test_messages_errors_are_anthropic_exceptions(stack):
    with _anthropic(stack, key="wrong") as client:
        with pytest.raises(anthropic.AuthenticationError) as e:
            client.messages.create(
                model="auto", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
    assert (
        e.value.body["type"] == "error" and e.value.body["error"]["type"] == "authentication_error"
    )
    with _anthropic(stack) as client:
        with pytest.raises(anthropic.NotFoundError):
            client.messages.create(
                model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(anthropic.BadRequestError) as e:
            client.messages.create(model="auto", max_tokens=8, messages=[])
        assert e.value.body["error"]["type"] == "invalid_request_error"


def test_messages_x_api_key_and_bearer_and_count_tokens(stack):
    hdrs = {"anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching-2024-07-31"}
    body = {"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": "hey"}]}
    for auth in ({"x-api-key": KEY_A}, {"authorization": f"Bearer {KEY_A}"}):
        r = httpx.post(stack["url"] + "/v1/messages", json=body, headers=hdrs | auth)
        assert r.status_code == 200 and r.json()["content"][0]["text"] == "echo: hey"
    with _anthropic(stack) as client:
        n = client.messages.count_tokens(
            model="auto", messages=[{"role": "user", "content": "x" * 35}]
        )
    assert n.input_tokens == 10 + 4  # 35 characters / 3.5, plus the per-message overhead


def test_messages_through_litellm_to_an_anthropic_backend(stack):
    """Anthropic caller -> chat (codec) -> litellm's real translation -> Anthropic's API (the
    backend's native pass-through turned off)."""
    stack["anthropic"].reset()
    with _anthropic(stack, default_headers={"x-route": "claude"}) as client:
        msg = client.messages.create(
            model="auto", max_tokens=32, messages=[{"role": "user", "content": "hello claude"}]
        )
        with client.messages.stream(
            model="auto", max_tokens=32, messages=[{"role": "user", "content": "hello stream"}]
        ) as s:
            streamed = s.get_final_message()
    assert "hello claude" in msg.content[0].text and msg.stop_reason == "end_turn"
    assert "hello stream" in streamed.content[0].text
    assert len(stack["anthropic"].bodies("/v1/messages")) == 2


def test_chat_cache_control_through_litellm_is_priced_at_cache_prices(stack):
    """An OpenAI chat caller's ``cache_control`` part goes through litellm to Anthropic; the
    cache reads and writes Anthropic reports (inside litellm's prompt_tokens) are charged at
    the map's cache prices, not the input price."""
    from gateway.backends.pricing import lookup_model
    from tests.support.mock_anthropic import CACHED, WRITTEN

    stack["anthropic"].reset()
    part = {"type": "text", "text": "a long stable prefix", "cache_control": {"type": "ephemeral"}}
    client = openai.OpenAI(
        base_url=stack["url"] + "/v1",
        api_key=KEY_A,
        max_retries=0,
        default_headers={"x-route": "claude"},
    )
    raw = client.chat.completions.with_raw_response.create(
        model="auto", max_tokens=16, messages=[{"role": "user", "content": [part]}]
    )
    done = raw.parse()
    [sent] = stack["anthropic"].bodies("/v1/messages")
    assert "cache_control" in json.dumps(sent)  # litellm passed the marker on
    e = lookup_model("claude-sonnet-4-5")
    assert e is not None
    u = done.usage
    fresh = u.prompt_tokens - CACHED - WRITTEN
    want = (
        fresh * e["input_cost_per_token"]
        + CACHED * e["cache_read_input_token_cost"]
        + WRITTEN * e["cache_creation_input_token_cost"]
        + u.completion_tokens * e["output_cost_per_token"]
    )
    assert fresh > 0 and float(raw.headers["x-gateway-cost-usd"]) == pytest.approx(want, rel=1e-6)


# ---------------------------------------------------------------- OpenAI Responses


def test_responses_whole_and_stream(stack):
    stack["local"].reset()
    with _openai(stack) as client:
        r = client.responses.create(model="auto", instructions="Be brief.", input="hello there")
        assert r.output_text == "echo: hello there" and r.status == "completed"
        assert r.usage.output_tokens == 3 and r.id.startswith("resp_")
        with client.responses.stream(model="auto", input="stream me please") as s:
            kinds = [e.type for e in s]
            final = s.get_final_response()
    assert final.output_text == "echo: stream me please"
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_item.added" in kinds and "response.output_text.delta" in kinds
    assert kinds[-1] == "response.completed" and final.usage.total_tokens > 0
    sent = stack["local"].bodies("/chat/completions")[0]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize("stream", [False, True])
def test_responses_tool_round_trip(stack, stream):
    stack["local"].reset()
    with _openai(stack) as client:
        kw = dict(
            model="auto",
            input="Rome",
            tools=[WEATHER_RESPONSES],
            tool_choice="required",
            store=False,
        )
        if stream:
            with client.responses.stream(**kw) as s:
                kinds = [e.type for e in s]
                first = s.get_final_response()
            assert "response.function_call_arguments.delta" in kinds
        else:
            first = client.responses.create(**kw)
        [call] = [it for it in first.output if it.type == "function_call"]
        assert call.name == "get_weather" and json.loads(call.arguments) == {"echo": "Rome"}
        second = client.responses.create(
            model="auto",
            tools=[WEATHER_RESPONSES],
            tool_choice="none",
            input=[
                {"role": "user", "content": "Rome"},
                {
                    "type": "function_call",
                    "call_id": call.call_id,
                    "name": call.name,
                    "arguments": call.arguments,
                },
                {"type": "function_call_output", "call_id": call.call_id, "output": "rainy"},
                {"role": "user", "content": [{"type": "input_text", "text": "so?"}]},
            ],
        )
    assert second.output_text == "echo: so?"
    sent = stack["local"].bodies("/chat/completions")[-1]
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": TOOL_CALL_ID, "content": "rainy"}


def test_responses_json_schema_and_max_output_tokens(stack):
    stack["local"].reset()
    fmt = {"type": "json_schema", "name": "echo", "schema": {"type": "object"}, "strict": True}
    with _openai(stack) as client:
        r = client.responses.create(
            model="auto", input="fmt", text={"format": fmt}, max_output_tokens=20
        )
    assert json.loads(r.output_text) == {"echo": "fmt"}
    [sent] = stack["local"].bodies("/chat/completions")
    assert sent["response_format"]["json_schema"]["name"] == "echo" and sent["max_tokens"] == 20


def test_responses_store_previous_id_get_delete_across_replicas_and_teams(stack):
    stack["local"].reset()
    with _openai(stack) as a1, _openai(stack, url="url2") as a2, _openai(stack, key=KEY_B) as b:
        first = a1.responses.create(model="auto", input="remember the tea")
        # another replica (same Redis) continues the conversation
        second = a2.responses.create(
            model="auto", input="and the cake", previous_response_id=first.id
        )
        assert second.output_text == "echo: and the cake"
        assert a2.responses.retrieve(first.id).output_text == "echo: remember the tea"
        with pytest.raises(openai.NotFoundError):  # scoped to the caller's team
            b.responses.retrieve(first.id)
        with pytest.raises(openai.NotFoundError):
            b.responses.create(model="auto", input="x", previous_response_id=first.id)
        a1.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            a2.responses.retrieve(first.id)
    sent = stack["local"].bodies("/chat/completions")[1]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"] == "echo: remember the tea"


def test_responses_errors_are_openai_exceptions(stack):
    with _openai(stack, key="wrong") as client:
        with pytest.raises(openai.AuthenticationError):
            client.responses.create(model="auto", input="x")
    with _openai(stack) as client:
        with pytest.raises(openai.BadRequestError):
            client.responses.create(
                model="auto", input=[{"type": "message", "role": "robot", "content": "x"}]
            )
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model="nope", input="x")


def test_stream_failure_after_first_byte_is_an_in_band_error_event(stack):
    """A backend that breaks mid-stream: each protocol ends its stream with its own error event."""
    for path, body in (
        (
            "/v1/messages",
            {
                "model": "auto",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": "a b c d e"}],
            },
        ),
        ("/v1/responses", {"model": "auto", "input": "a b c d e", "store": False}),
    ):
        stack["local"].break_stream_next(after_events=2)
        with httpx.stream(
            "POST", stack["url"] + path, json={**body, "stream": True}, headers={"x-api-key": KEY_A}
        ) as r:
            text = r.read().decode()
        assert r.status_code == 200 and "event: error" in text, text
        assert "message_stop" not in text and "response.completed" not in text


def test_translation_drops_what_chat_backends_cannot_take(stack):
    """thinking, cache_control and server tools are ignored (documented), images translated."""
    stack["local"].reset()
    body = {
        "model": "auto",
        "max_tokens": 16,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"type": "web_search_20250305", "name": "web_search"}, WEATHER_ANTHROPIC],
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                    {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "ok"},
                ],
            },
            {"role": "user", "content": "go on"},
        ],
    }
    r = httpx.post(stack["url"] + "/v1/messages", json=body, headers={"x-api-key": KEY_A})
    assert r.status_code == 200, r.text
    [sent] = stack["local"].bodies("/chat/completions")
    assert "thinking" not in sent and [t["function"]["name"] for t in sent["tools"]] == [
        "get_weather"
    ]
    assert sent["messages"][0]["content"][0] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA"},
    }
    assert sent["messages"][1] == {"role": "assistant", "content": "ok"}
    assert "cache_control" not in json.dumps(sent)
