"""The shipped policies/default.yaml and the native paths, against loopback mocks.

Its ``openai`` backend is gpt-4o, which answers 400 to ``reasoning`` (the mock does as
OpenAI does). Codex sends ``reasoning`` (with ``include: [reasoning.encrypted_content]`` and
``store: false``): a Codex turn escalated there must be translated and answered, as before
native pass-through, not turned into that 400.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.gateway.gateway_server import running_gateway
from tests.support.mock_openai import running_mock_openai
from tests.support.servers import MockControl

ROOT = Path(__file__).resolve().parents[2]
UP_KEY = "sk-default-policy-test"
CODEX_TURN = {
    "model": "gpt-4o",  # the default policy's alias: [openai, anthropic]
    "instructions": "You are a coding agent.",
    "input": [{"role": "user", "content": [{"type": "input_text", "text": "fix the bug"}]}],
    "reasoning": {"effort": "medium", "summary": "auto"},
    "include": ["reasoning.encrypted_content"],
    "store": False,
}


@pytest.fixture(scope="module")
def stack():
    with (
        running_mock_openai(MockControl(models=["default"])) as (local, _local_ctl),
        running_mock_openai(MockControl(models=["gpt-4o"], api_key=UP_KEY)) as (oai, oai_ctl),
    ):
        env = {"LOCAL_ENGINE_URL": local, "OPENAI_BASE_URL": oai, "OPENAI_API_KEY": UP_KEY}
        with running_gateway(ROOT / "policies" / "default.yaml", env) as (base, _):
            yield base, oai_ctl, oai


@pytest.mark.parametrize("stream", [False, True])
def test_a_codex_turn_escalated_to_gpt_4o_is_translated_not_refused(stack, stream):
    base, oai_ctl, _ = stack
    oai_ctl.reset()
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
    if stream:
        with client.responses.create(stream=True, **CODEX_TURN) as events:
            kinds = [e.type for e in events]
            headers = events.response.headers
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    else:
        raw = client.responses.with_raw_response.create(**CODEX_TURN)
        assert raw.parse().output_text == "echo: fix the bug"
        headers = raw.headers
    assert headers["x-gateway-backend"] == "openai" and "x-gateway-native" not in headers
    [rec] = oai_ctl.requests
    assert rec.path == "/v1/chat/completions" and rec.body["model"] == "gpt-4o"
    assert "reasoning" not in rec.body and "include" not in rec.body


def test_the_same_turn_sent_natively_is_what_gpt_4o_refuses(stack):
    """Positive control: the mock does refuse ``reasoning`` for gpt-4o on /responses."""
    _, _, upstream = stack
    r = httpx.post(
        upstream + "/responses",
        json={**CODEX_TURN, "model": "gpt-4o"},
        headers={"authorization": f"Bearer {UP_KEY}"},
    )
    assert r.status_code == 400 and "reasoning" in r.json()["error"]["message"]
