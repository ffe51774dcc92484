"""The confidence cascade end to end: the official openai SDK -> the real gateway -> our
engine serving its demo model (real token log-probs) first, a loopback mock as the strong
model. Thresholds are set around the confidence the engine's greedy answer really has, so
escalation must happen exactly below it."""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI

from local_engine.cli import make_demo_model
from local_engine.config import EngineConfig
from tests.gateway.gateway_server import running_gateway
from tests.local_engine.server_harness import running_server
from tests.shadow.shadow_harness import metric
from tests.support.mock_openai import running_mock_openai
from tests.support.policy import NO_RETRY, local_backend, openai_backend, policy_yaml
from tests.support.servers import MockControl

ADMIN = "gw-admin-CASCADE"
GPU_PRICING = {"gpu_usd_per_hour": 3.6, "tokens_per_second": 100}
# per million tokens: input, output, prompt-cache read
IN_USD, OUT_USD, READ_USD = 10.0, 30.0, 1.0
TOKEN_PRICING = {
    "input_usd_per_mtok": IN_USD,
    "output_usd_per_mtok": OUT_USD,
    "cache_read_usd_per_mtok": READ_USD,
}


def _policy(engine: str, strong: str, t: float, observe: bool, local_pricing: dict) -> str:
    cascade = {"min_confidence": t, "observe_only": observe}
    rules = [
        {
            "name": "confidential",
            "when": {"headers": {"x-data-classification": "confidential"}},
            "route": "local",
            "self_hosted_only": True,
            "cascade": cascade,
        },
        {"name": "everyday", "route": ["local", "strong"], "cascade": cascade},
    ]
    return policy_yaml(
        auth={"admin_key": "os.environ/ADMIN_KEY"},
        cache={"enabled": False},
        backends={
            "local": local_backend(
                f"{engine}/v1", model="demo", pricing=local_pricing, retry=NO_RETRY
            ),
            "strong": openai_backend(strong, api_key="os.environ/STRONG_KEY", retry=NO_RETRY),
        },
        models={"auto": {"rules": rules}},
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade")
    model = make_demo_model(root / "demo")
    cfg = EngineConfig(
        model=str(model),
        device="cpu",
        dtype="float32",
        num_kv_blocks=128,
        block_size=16,
        max_num_seqs=4,
        max_num_batched_tokens=256,
        served_model_name="demo",
    )
    strong_ctl = MockControl(api_key="sk-strong", models=["gpt-4o"])
    with running_server(cfg) as engine, running_mock_openai(strong_ctl) as (strong, _):
        path = root / "policy.yaml"
        path.write_text(_policy(engine, strong, -1000, False, GPU_PRICING))
        env = {"ADMIN_KEY": ADMIN, "STRONG_KEY": "sk-strong"}
        with running_gateway(path, env) as (base, _app):
            client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)

            def set_policy(t: float, observe: bool = False, pricing: dict = GPU_PRICING) -> None:
                path.write_text(_policy(engine, strong, t, observe, pricing))
                r = httpx.post(base + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"})
                assert r.status_code == 200, r.text

            yield {
                "base": base,
                "client": client,
                "strong": strong_ctl,
                "set": set_policy,
                "engine": engine,
            }


def ask(client: OpenAI, text: str, headers: dict | None = None, **kw):
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": text}],
        max_tokens=8,
        temperature=0,
        extra_headers=headers or {},
        **kw,
    )
    return raw.headers, raw.parse()


def test_escalates_exactly_below_the_threshold_and_never_leaks_the_first_answer(stack):
    c, strong = stack["client"], stack["strong"]
    stack["set"](-1000)
    h, local = ask(c, "tell me a story")
    assert h["x-gateway-cascade"] == "kept" and h["x-gateway-backend"] == "local"
    conf = float(h["x-gateway-cascade-confidence"])
    assert conf < 0 and local.choices[0].logprobs is None  # the client did not ask for them
    local_text = local.choices[0].message.content

    stack["set"](conf - 0.001)  # just below the answer's confidence: kept
    h, again = ask(c, "tell me a story")
    assert (h["x-gateway-cascade"], again.choices[0].message.content) == ("kept", local_text)
    assert float(h["x-gateway-cascade-extra-cost-usd"]) == 0
    assert strong.bodies() == []

    stack["set"](conf + 0.001)  # just above: escalated to the strong model
    h, esc = ask(c, "tell me a story")
    assert h["x-gateway-cascade"] == "escalated" and h["x-gateway-backend"] == "strong"
    assert esc.choices[0].message.content == "echo: tell me a story"
    assert local_text not in esc.model_dump_json()  # the first answer never reaches the client
    assert float(h["x-gateway-cascade-extra-cost-usd"]) > 0
    assert float(h["x-gateway-cascade-extra-ms"]) > 0
    assert float(h["x-gateway-cascade-confidence"]) == pytest.approx(conf, abs=1e-3)
    assert len(strong.bodies()) == 1 and "logprobs" not in strong.bodies()[0]
    base = stack["base"]
    assert metric(base, "gateway_cascade_total", rule="everyday", result="escalated") == 1
    assert metric(base, "gateway_cascade_extra_cost_usd_total", rule="everyday") > 0
    assert metric(base, "gateway_cascade_confidence_count", rule="everyday") >= 3


def test_extra_cost_prices_the_local_answers_cached_prompt_tokens(stack):
    """The discarded local answer's cost (the cascade's extra cost) charges the prompt tokens
    the engine read from its prefix cache at the backend's cache-read price, as spend does."""
    text = "Once upon a time a small grey cat lived by the sea. " * 4 + "What happened next?"
    stack["set"](0, pricing=TOKEN_PRICING)  # log-prob confidence < 0: every answer escalates
    # the body the cascade sends the engine; asked twice, the second reads the prompt's cached
    # blocks, as the cascade's own call then does
    body = {"model": "demo", "messages": [{"role": "user", "content": text}]}
    body |= {"max_tokens": 8, "temperature": 0, "logprobs": True}
    for _ in range(2):
        r = httpx.post(stack["engine"] + "/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
    u = r.json()["usage"]
    p, done, cached = (
        u["prompt_tokens"],
        u["completion_tokens"],
        u["prompt_tokens_details"]["cached_tokens"],
    )
    assert 0 < cached < p
    h, _ = ask(stack["client"], text)
    assert h["x-gateway-cascade"] == "escalated"
    want = ((p - cached) * IN_USD + cached * READ_USD + done * OUT_USD) / 1e6
    full = (p * IN_USD + done * OUT_USD) / 1e6  # every prompt token at the input price
    assert want < full - 1e-5
    assert float(h["x-gateway-cascade-extra-cost-usd"]) == pytest.approx(want, abs=2e-8)


def test_data_that_must_stay_home_is_not_escalated(stack):
    c, strong = stack["client"], stack["strong"]
    stack["set"](0)  # every answer is unsure (confidence < 0)
    before = len(strong.bodies())
    h, resp = ask(c, "confidential plan", {"x-data-classification": "confidential"})
    assert h["x-gateway-cascade"] == "unescalated" and h["x-gateway-backend"] == "local"
    assert len(strong.bodies()) == before
    assert not any("confidential plan" in str(b) for b in strong.bodies())


def test_observe_only_and_client_logprobs(stack):
    c = stack["client"]
    stack["set"](0, observe=True)
    h, resp = ask(c, "observe me", logprobs=True)
    assert h["x-gateway-cascade"] == "observed" and h["x-gateway-backend"] == "local"
    assert resp.choices[0].logprobs is not None and resp.choices[0].logprobs.content


def test_failed_escalation_returns_the_local_answer(stack):
    c, strong = stack["client"], stack["strong"]
    stack["set"](0)
    strong.fail_next(1, status=500)
    h, resp = ask(c, "will fail over")
    assert h["x-gateway-cascade"] == "escalation_failed" and h["x-gateway-backend"] == "local"
    assert resp.choices[0].message.content != "echo: will fail over"


def test_streams_are_not_cascaded(stack):
    c = stack["client"]
    stack["set"](0)
    raw = c.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "stream it"}],
        max_tokens=4,
        temperature=0,
        stream=True,
    )
    assert "x-gateway-cascade" not in raw.headers and raw.headers["x-gateway-backend"] == "local"
    assert list(raw.parse())
