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
from tests.support.servers import MockControl

ADMIN = "gw-admin-CASCADE"
POLICY = """
auth: {{admin_key: os.environ/ADMIN_KEY}}
cache: {{enabled: false}}
backends:
  local:
    kind: openai_compatible
    base_url: {engine}/v1
    model: demo
    self_hosted: true
    pricing: {{gpu_usd_per_hour: 3.6, tokens_per_second: 100}}
    retry: {{max_attempts: 1}}
  strong:
    kind: openai_compatible
    base_url: {strong}
    model: gpt-4o
    api_key: os.environ/STRONG_KEY
    retry: {{max_attempts: 1}}
models:
  auto:
    rules:
      - name: confidential
        when: {{headers: {{x-data-classification: confidential}}}}
        route: local
        self_hosted_only: true
        cascade: {{min_confidence: {t}, observe_only: {observe}}}
      - name: everyday
        route: [local, strong]
        cascade: {{min_confidence: {t}, observe_only: {observe}}}
"""


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
        fmt = dict(engine=engine, strong=strong)
        path.write_text(POLICY.format(t=-1000, observe="false", **fmt))
        env = {"ADMIN_KEY": ADMIN, "STRONG_KEY": "sk-strong"}
        with running_gateway(path, env) as (base, _app):
            client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)

            def set_policy(t: float, observe: bool = False) -> None:
                path.write_text(POLICY.format(t=t, observe=str(observe).lower(), **fmt))
                r = httpx.post(base + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"})
                assert r.status_code == 200, r.text

            yield {"base": base, "client": client, "strong": strong_ctl, "set": set_policy}


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
