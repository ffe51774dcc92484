"""Team budgets over the shared state (real Redis): past the budget, stay self-hosted or refuse."""

from __future__ import annotations

import uuid

import openai
import pytest
from gateway_server import running_gateway
from openai import OpenAI

from tests.support.mock_openai import running_mock_openai
from tests.support.servers import MockControl

POLICY = """
auth:
  keys:
    - {{name: a, key: os.environ/KEY_A, team: thrifty}}
    - {{name: b, key: os.environ/KEY_B, team: strict}}
teams:
  thrifty: {{budget_usd: 0.000001, budget_period: day}}
  strict: {{budget_usd: 0.000001, budget_period: day, on_budget_exhausted: reject}}
state_redis_url: "redis://127.0.0.1:6379/0"
cache: {{enabled: false, namespace: "{ns}"}}
backends:
  local: {{kind: openai_compatible, base_url: "{local}", model: m, self_hosted: true}}
  gpt:
    kind: openai_compatible
    base_url: "{gpt}"
    model: gpt-4o
    pricing: {{input_usd_per_mtok: 1000, output_usd_per_mtok: 1000}}
models:
  auto:
    rules:
      - {{name: vision, when: {{needs: [vision]}}, route: gpt}}
      - {{name: everyday, route: gpt}}
    fallbacks: [local]
"""

ENV = {"KEY_A": "key-a-secret", "KEY_B": "key-b-secret"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    with (
        running_mock_openai(MockControl(models=["m"])) as (local, local_ctl),
        running_mock_openai(MockControl(models=["gpt-4o"])) as (gpt, gpt_ctl),
    ):
        policy = tmp_path_factory.mktemp("p") / "p.yaml"
        policy.write_text(POLICY.format(local=local, gpt=gpt, ns=f"budget-{uuid.uuid4().hex}"))
        with running_gateway(policy, ENV) as (base, _):
            yield base, local_ctl, gpt_ctl


def msg(text="hello"):
    return [{"role": "user", "content": text}]


def test_over_budget_team_stays_on_self_hosted(setup):
    base, local_ctl, gpt_ctl = setup
    c = OpenAI(base_url=base + "/v1", api_key=ENV["KEY_A"], max_retries=0)
    first = c.chat.completions.with_raw_response.create(model="auto", messages=msg())
    assert first.headers["x-gateway-backend"] == "gpt"  # under budget: the policy's choice
    n_gpt = len(gpt_ctl.requests)
    second = c.chat.completions.with_raw_response.create(model="auto", messages=msg())
    assert second.headers["x-gateway-backend"] == "local"  # over budget: self-hosted only
    assert len(gpt_ctl.requests) == n_gpt


def test_over_budget_team_with_reject_gets_429(setup):
    base, _, _ = setup
    c = OpenAI(base_url=base + "/v1", api_key=ENV["KEY_B"], max_retries=0)
    c.chat.completions.create(model="auto", messages=msg())
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="auto", messages=msg())
    assert e.value.body["code"] == "budget_exceeded"
