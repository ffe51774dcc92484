"""End to end: the official openai SDK -> the real gateway (uvicorn) -> real loopback upstreams.

Upstreams: two OpenAI-compatible mocks (one self-hosted "local", one standing in for OpenAI)
and one speaking Anthropic's Messages API, reached through litellm's real translation.
"""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest
import yaml
from openai import OpenAI

from tests.gateway.gateway_server import running_gateway
from tests.gateway.qa_support import metric_value
from tests.support.mock_anthropic import running_mock_anthropic
from tests.support.mock_openai import TOOL_CALL_ID, running_mock_openai
from tests.support.policy import (
    NO_RETRY,
    anthropic_backend,
    client_key,
    local_backend,
    openai_backend,
    policy_yaml,
)
from tests.support.servers import MockControl

CLIENT_KEY = "gw-client-key-ALPHA"
OTHER_TEAM_KEY = "gw-client-key-BRAVO"
ADMIN_KEY = "gw-admin-key-CHARLIE"
OPENAI_KEY = "sk-upstream-openai-SECRET"
ANTHROPIC_KEY = "sk-ant-upstream-SECRET"
SECRETS = [CLIENT_KEY, OTHER_TEAM_KEY, ADMIN_KEY, OPENAI_KEY, ANTHROPIC_KEY]

RULES = [
    {
        "name": "confidential",
        "when": {"headers": {"x-data-classification": "confidential"}},
        "route": "local",
        "self_hosted_only": True,
    },
    {"name": "vision", "when": {"needs": ["vision"]}, "route": ["openai", "anthropic"]},
    {"name": "hard", "when": {"difficulty": "hard"}, "route": ["openai"]},
    {"name": "everyday", "route": "local"},
]


def _policy(local: str, openai: str, anthropic: str, ns: str) -> str:
    keys = [
        client_key("alpha", "CLIENT_KEY", "alpha"),
        client_key("bravo", "OTHER_KEY", "bravo", rpm=5),
    ]
    retry = {"max_attempts": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.02}
    caps = {"context_window": 4096, "vision": False, "tools": True, "json_schema": False}
    return policy_yaml(
        auth={"admin_key": "os.environ/ADMIN_KEY", "keys": keys},
        server={"max_body_bytes": 20000},
        cache={"redis_url": "redis://127.0.0.1:6379/0", "namespace": ns, "ttl_s": 60},
        backends={
            "local": local_backend(
                local,
                pricing={"gpu_usd_per_hour": 3.6, "tokens_per_second": 1000},
                capabilities=caps,
                retry=retry,
                circuit_breaker={"failure_threshold": 3, "cooldown_s": 60},
                timeout_s=5,
            ),
            "openai": openai_backend(openai, retry=retry, timeout_s=5),
            "anthropic": anthropic_backend(anthropic, retry=NO_RETRY, timeout_s=5),
            "local-embed": local_backend(
                local, model="embed-local", capabilities={"embeddings": True, "chat": False}
            ),
        },
        models={
            "auto": {
                "difficulty": {"scorer": "heuristic", "threshold": 0.6},
                "fallbacks": ["openai", "anthropic"],
                "embeddings": ["local-embed"],
                "rules": RULES,
            },
            "claude": {"route": "anthropic"},
        },
    )


@pytest.fixture(scope="module")
def upstreams():
    with (
        running_mock_openai(MockControl(models=["qwen-local", "embed-local"])) as (
            local,
            local_ctl,
        ),
        running_mock_openai(MockControl(api_key=OPENAI_KEY, models=["gpt-4o"])) as (oai, oai_ctl),
        running_mock_anthropic(MockControl(api_key=ANTHROPIC_KEY)) as (ant, ant_ctl),
    ):
        yield {"local": (local, local_ctl), "openai": (oai, oai_ctl), "anthropic": (ant, ant_ctl)}


ENV = {
    "CLIENT_KEY": CLIENT_KEY,
    "OTHER_KEY": OTHER_TEAM_KEY,
    "ADMIN_KEY": ADMIN_KEY,
    "OPENAI_API_KEY": OPENAI_KEY,
    "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
}


def write_policy(path, upstreams, **overrides) -> None:
    urls = {k: v[0] for k, v in upstreams.items()} | overrides
    path.write_text(_policy(ns=f"test-{uuid.uuid4().hex}", **urls))


@pytest.fixture(scope="module")
def gateway(upstreams, tmp_path_factory):
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    write_policy(policy, upstreams)
    with running_gateway(policy, ENV) as (base, app):
        yield {"base": base, "app": app, "policy": policy}


@pytest.fixture(autouse=True)
def _reset(request, upstreams):
    for _, ctl in upstreams.values():
        ctl.reset()
    if "gateway" in request.fixturenames:  # each test starts with closed circuits
        for breaker in request.getfixturevalue("gateway")["app"].store.runtime.breakers.values():
            breaker.record_success()


@pytest.fixture
def client(gateway) -> OpenAI:
    return OpenAI(base_url=gateway["base"] + "/v1", api_key=CLIENT_KEY, max_retries=0)


def gw_headers(raw) -> dict[str, str]:
    return {k: v for k, v in raw.headers.items() if k.startswith("x-gateway-")}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------- happy paths


def test_chat_routes_everyday_to_local_with_headers(client, upstreams):
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=user("hello there"),
        max_tokens=20,
        user="u1",
        metadata={"k": "v"},
        extra_body={"custom_field": 7},
    )
    r = raw.parse()
    h = gw_headers(raw)
    assert r.choices[0].message.content == "echo: hello there"
    assert r.model == "qwen-local"  # the model that actually answered
    assert h["x-gateway-backend"] == "local" and h["x-gateway-route-reason"] == "everyday"
    assert h["x-gateway-cache"] == "bypass"  # not deterministic: no temperature 0, no seed
    assert float(h["x-gateway-cost-usd"]) > 0 and float(h["x-gateway-overhead-ms"]) >= 0
    sent = upstreams["local"][1].bodies("/chat/completions")[-1]
    assert sent["model"] == "qwen-local" and sent["max_tokens"] == 20
    assert (
        sent["custom_field"] == 7 and sent["metadata"] == {"k": "v"} and sent["user"] == "u1"
    )  # unknown fields pass through


def test_streaming_with_and_without_usage(client, upstreams):
    stream = client.chat.completions.create(
        model="auto",
        messages=user("one two three"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    stream = client.chat.completions.create(model="auto", messages=user("four five"), stream=True)
    chunks = list(stream)
    assert all(
        c.usage is None for c in chunks
    )  # the client did not ask: the usage chunk is stripped
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: four five"
    )
    # ...but the gateway asked upstream anyway, to account the cost
    assert upstreams["local"][1].bodies("/chat/completions")[-1]["stream_options"] == {
        "include_usage": True
    }


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_tool_calls_pass_through_exactly(client):
    r = client.chat.completions.create(
        model="auto", messages=user("weather in Paris"), tools=TOOLS, tool_choice="auto"
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.id == TOOL_CALL_ID and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"echo": "weather in Paris"}
    stream = client.chat.completions.create(
        model="auto", messages=user("weather in Rome"), tools=TOOLS, stream=True
    )
    ids, names, args = set(), set(), ""
    for ch in stream:
        for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            ids.add(tc.id) if tc.id else None
            names.add(tc.function.name) if tc.function and tc.function.name else None
            args += (tc.function.arguments or "") if tc.function else ""
    assert (
        ids == {TOOL_CALL_ID}
        and names == {"get_weather"}
        and json.loads(args) == {"echo": "weather in Rome"}
    )


def test_vision_goes_to_a_vision_backend(client, upstreams):
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": content}]
    )
    assert gw_headers(raw)["x-gateway-backend"] == "openai"
    assert gw_headers(raw)["x-gateway-route-reason"] == "vision"
    assert upstreams["local"][1].requests == []
    assert (
        upstreams["openai"][1].requests[-1].auth_ok
    )  # the gateway's upstream key, not the client's


def test_hard_prompt_escalates_by_difficulty(client):
    prompt = (
        "Prove rigorously, step by step, that the integral of 1/x diverges. "
        + "Consider every case carefully. " * 40
    )
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=user(prompt))
    assert gw_headers(raw)["x-gateway-route-reason"] == "hard"
    assert gw_headers(raw)["x-gateway-backend"] == "openai"


def test_json_schema_skips_local_without_the_capability(client):
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=user("give json"),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
    )
    assert gw_headers(raw)["x-gateway-backend"] == "openai"
    assert json.loads(raw.parse().choices[0].message.content) == {"echo": "give json"}


def test_completions_and_embeddings(client, upstreams):
    r = client.completions.create(model="auto", prompt="Say hi", max_tokens=5)
    assert r.choices[0].text
    e = client.embeddings.create(model="auto", input=["a", "b"])
    assert len(e.data) == 2 and len(e.data[0].embedding) > 0
    assert upstreams["local"][1].bodies("/embeddings")[-1]["model"] == "embed-local"


def test_models_lists_virtual_models(client):
    ids = {m.id for m in client.models.list()}
    assert ids == {"auto", "claude"}
    assert client.models.retrieve("claude").id == "claude"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_anthropic_through_litellm_translation(client, upstreams):
    raw = client.chat.completions.with_raw_response.create(
        model="claude",
        messages=[{"role": "system", "content": "be brief"}, *user("hi claude")],
        max_tokens=50,
    )
    r = raw.parse()
    assert gw_headers(raw)["x-gateway-backend"] == "anthropic"
    assert "hi claude" in r.choices[0].message.content
    sent = upstreams["anthropic"][1].requests[-1]
    assert sent.path == "/v1/messages" and sent.auth_ok
    assert (
        sent.body["system"] and sent.body["max_tokens"] == 50
    )  # really translated to Messages API
    chunks = list(
        client.chat.completions.create(
            model="claude", messages=user("stream me"), stream=True, max_tokens=50
        )
    )
    assert "stream me" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_anthropic_tool_calls_translated(client):
    r = client.chat.completions.create(
        model="claude", messages=user("weather in Oslo"), tools=TOOLS, max_tokens=50
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id


# ---------------------------------------------------------------- cache


def test_cache_hit_miss_stream_replay_and_opt_out(client, upstreams):
    msgs = user(f"cache me {uuid.uuid4().hex}")
    a = client.chat.completions.with_raw_response.create(model="auto", messages=msgs, temperature=0)
    b = client.chat.completions.with_raw_response.create(model="auto", messages=msgs, temperature=0)
    assert gw_headers(a)["x-gateway-cache"] == "miss" and gw_headers(b)["x-gateway-cache"] == "hit"
    assert a.parse().choices[0].message.content == b.parse().choices[0].message.content
    assert len(upstreams["local"][1].requests) == 1
    # a streaming request is served from the cached answer as a proper SSE stream
    with client.chat.completions.with_streaming_response.create(
        model="auto",
        messages=msgs,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        assert resp.headers["x-gateway-cache"] == "hit"
        chunks = list(resp.parse())
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == a.parse().choices[0].message.content
    )
    assert chunks[-1].usage.total_tokens == a.parse().usage.total_tokens
    assert len(upstreams["local"][1].requests) == 1
    c = client.chat.completions.with_raw_response.create(
        model="auto", messages=msgs, temperature=0, extra_headers={"Cache-Control": "no-store"}
    )
    assert gw_headers(c)["x-gateway-cache"] == "bypass" and len(upstreams["local"][1].requests) == 2


def test_cache_is_per_team(gateway, upstreams):
    msgs = user(f"team scoped {uuid.uuid4().hex}")
    alpha = OpenAI(base_url=gateway["base"] + "/v1", api_key=CLIENT_KEY, max_retries=0)
    bravo = OpenAI(base_url=gateway["base"] + "/v1", api_key=OTHER_TEAM_KEY, max_retries=0)
    alpha.chat.completions.create(model="auto", messages=msgs, seed=1)
    raw = bravo.chat.completions.with_raw_response.create(model="auto", messages=msgs, seed=1)
    assert gw_headers(raw)["x-gateway-cache"] == "miss"


# ---------------------------------------------------------------- errors


def test_auth_errors(gateway):
    for key in ("wrong-key", ""):
        c = OpenAI(base_url=gateway["base"] + "/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            c.chat.completions.create(model="auto", messages=user("hi"))
        assert e.value.body["type"] == "authentication_error"
    r = httpx.post(
        gateway["base"] + "/v1/chat/completions", json={"model": "auto", "messages": user("x")}
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_bad_requests_in_openai_format(client, gateway):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=user("hi"))
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="auto", messages=[])
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="auto", messages=user("x"), temperature=5)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="auto", messages=user("x"), max_tokens=2**64)
    assert e.value.body["param"] == "max_tokens"
    hdr = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
    r = httpx.post(gateway["base"] + "/v1/chat/completions", content=b"{not json", headers=hdr)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(gateway["base"] + "/v1/chat/completions", content=b"x" * 30000, headers=hdr)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    r = httpx.get(gateway["base"] + "/v1/chat/completions", headers=hdr)
    assert r.status_code == 405
    r = httpx.get(gateway["base"] + "/nope", headers=hdr)
    assert r.status_code == 404 and "error" in r.json()


def test_rate_limit_429(gateway):
    bravo = OpenAI(base_url=gateway["base"] + "/v1", api_key=OTHER_TEAM_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError) as e:
        for _ in range(10):
            bravo.chat.completions.create(model="auto", messages=user("x"))
    assert e.value.response.headers.get("retry-after")


def test_upstream_client_error_is_relayed(client, upstreams):
    upstreams["local"][1].fail_next(1, status=400)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="auto", messages=user("x"))
    assert upstreams["openai"][1].requests == []  # a 400 is the request's fault: no fallback


def test_all_upstreams_failing_gives_5xx(client, upstreams):
    upstreams["local"][1].fail_next(10, status=503)
    upstreams["openai"][1].fail_next(10, status=502)
    upstreams["anthropic"][1].fail_next(10, status=500)
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="auto", messages=user("x"))
    assert e.value.status_code in (500, 502, 503)
    assert OPENAI_KEY not in e.value.response.text and ANTHROPIC_KEY not in e.value.response.text


def test_retry_honours_retry_after_then_succeeds(client, upstreams, gateway):
    upstreams["local"][1].fail_next(1, status=429, retry_after="0")
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=user("retry me"))
    assert gw_headers(raw)["x-gateway-backend"] == "local"
    assert len(upstreams["local"][1].requests) == 2
    assert "gateway_retries_total" in httpx.get(gateway["base"] + "/metrics").text


def test_stream_falls_back_before_first_byte_and_errors_after(client, upstreams):
    upstreams["local"][1].fail_next(2, status=500)
    chunks = list(
        client.chat.completions.create(model="auto", messages=user("fall back"), stream=True)
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: fall back"
    )
    assert len(upstreams["openai"][1].requests) == 1
    upstreams["local"][1].break_stream_next(after_events=2)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model="auto", messages=user("break after two events please"), stream=True
        ):
            pass


def test_health_ready_metrics(gateway):
    assert httpx.get(gateway["base"] + "/health").json() == {"status": "ok"}
    r = httpx.get(gateway["base"] + "/ready")
    assert r.status_code == 200 and "local" in r.json()["backends_up"]
    text = httpx.get(gateway["base"] + "/metrics").text
    for name in (
        "gateway_requests_total",
        "gateway_cost_usd_total",
        "gateway_savings_usd_total",
        "gateway_overhead_seconds",
    ):
        assert name in text


def test_secrets_never_in_logs_errors_or_metrics(client, gateway, upstreams, caplog):
    caplog.set_level("DEBUG")
    upstreams["openai"][1].fail_next(4, status=401)
    content = [
        {"type": "text", "text": "x"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
    ]
    upstreams["anthropic"][1].fail_next(2, status=401)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": content}]
        )
    assert e.value.status_code != 401  # the upstream rejected OUR key: not the client's fault
    metrics = httpx.get(gateway["base"] + "/metrics").text
    for s in SECRETS:
        assert s not in caplog.text and s not in metrics and s not in e.value.response.text


# ---------------------------------------------------------------- resilience with a dying local upstream


def test_fallback_when_local_is_killed_and_confidential_stays_home(upstreams, tmp_path):
    local_ctl = MockControl(models=["qwen-local"])
    with running_mock_openai(local_ctl) as (local_url, _):
        policy = tmp_path / "p.yaml"
        write_policy(policy, upstreams, local=local_url)
        with running_gateway(policy, ENV) as (base, _app):
            c = OpenAI(base_url=base + "/v1", api_key=CLIENT_KEY, max_retries=0)
            assert (
                gw_headers(
                    c.chat.completions.with_raw_response.create(model="auto", messages=user("a"))
                )["x-gateway-backend"]
                == "local"
            )
            stop_local = local_url  # leaving the with-block below kills the local upstream
    # local is now dead (port closed): run a fresh gateway at the dead address
    with running_gateway(policy, ENV) as (base, _app):
        c = OpenAI(base_url=base + "/v1", api_key=CLIENT_KEY, max_retries=0)
        before = len(upstreams["openai"][1].requests)
        raw = c.chat.completions.with_raw_response.create(
            model="auto", messages=user("still there?")
        )
        assert gw_headers(raw)["x-gateway-backend"] == "openai"
        assert len(upstreams["openai"][1].requests) == before + 1
        n_oai, n_ant = len(upstreams["openai"][1].requests), len(upstreams["anthropic"][1].requests)
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as e:
                r = c.chat.completions.create(
                    model="auto",
                    messages=user("secret numbers"),
                    stream=stream,
                    extra_headers={"x-data-classification": "confidential"},
                )
                list(r) if stream else None
            assert e.value.status_code == 503 and "self-hosted" in e.value.message
        # proof: not one proprietary call for the confidential requests
        assert (
            len(upstreams["openai"][1].requests) == n_oai
            and len(upstreams["anthropic"][1].requests) == n_ant
        )
        metrics = httpx.get(base + "/metrics").text
        assert 'gateway_fallbacks_total{from_backend="local"' in metrics
        assert stop_local  # the dead address really was the local upstream's


def test_circuit_opens_after_consecutive_failures(upstreams, tmp_path):
    local_ctl = MockControl(models=["qwen-local"])
    with running_mock_openai(local_ctl) as (local_url, _):
        policy = tmp_path / "p.yaml"
        write_policy(policy, upstreams, local=local_url)
        with running_gateway(policy, ENV) as (base, _app):
            c = OpenAI(base_url=base + "/v1", api_key=CLIENT_KEY, max_retries=0)
            local_ctl.fail_next(100, status=503)
            for _ in range(3):
                c.chat.completions.create(model="auto", messages=user("x"))
            seen = len(local_ctl.requests)
            raw = c.chat.completions.with_raw_response.create(model="auto", messages=user("x"))
            assert gw_headers(raw)["x-gateway-backend"] == "openai"
            assert len(local_ctl.requests) == seen  # open circuit: local not even tried
            assert 'gateway_circuit_state{backend="local"} 2.0' in httpx.get(base + "/metrics").text


# ---------------------------------------------------------------- hot reload


def test_policy_hot_reload_good_bad_and_admin(gateway, upstreams, client):
    import time

    policy = gateway["policy"]
    original = policy.read_text()
    try:
        changed = yaml.safe_load(original)
        changed["models"]["new-alias"] = {"route": "openai"}
        policy.write_text(yaml.safe_dump(changed, sort_keys=False))
        deadline = time.monotonic() + 10
        while "new-alias" not in {m.id for m in client.models.list()}:
            assert time.monotonic() < deadline, "file change not picked up"
            time.sleep(0.1)
        policy.write_text(original + "\nthis is: [not valid\n")
        # the failure series exists from the start (at 0): wait for the watcher to count one
        deadline = time.monotonic() + 20
        while (
            metric_value(
                httpx.get(gateway["base"] + "/metrics").text,
                "gateway_policy_reloads_total",
                result="failure",
            )
            < 1
        ):
            assert time.monotonic() < deadline, "the bad file was never tried"
            time.sleep(0.1)
        assert "new-alias" in {m.id for m in client.models.list()}  # the old policy keeps serving
        r = httpx.post(
            gateway["base"] + "/admin/reload", headers={"Authorization": f"Bearer {CLIENT_KEY}"}
        )
        assert r.status_code == 401
        r = httpx.post(
            gateway["base"] + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert r.status_code == 400 and "not valid YAML" in r.json()["error"]["message"]
    finally:
        policy.write_text(original)
    r = httpx.post(
        gateway["base"] + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert r.status_code == 200
    assert {m.id for m in client.models.list()} == {"auto", "claude"}


def test_upstream_rate_limits_everywhere_become_429(client, upstreams):
    upstreams["local"][1].fail_next(2, status=429, retry_after="1")
    upstreams["openai"][1].fail_next(2, status=429, retry_after="1")
    upstreams["anthropic"][1].fail_next(2, status=429, retry_after="1")
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="auto", messages=user("x"))
    assert e.value.body["code"] == "upstream_rate_limited"
    assert e.value.response.headers["retry-after"] == "1"
