"""The default policy on a first run: no provider keys, only the self-hosted engine (a mock)."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml
from gateway_server import running_gateway
from openai import OpenAI

from tests.support.mock_openai import running_mock_openai
from tests.support.servers import MockControl

REPO = Path(__file__).resolve().parents[2]


def test_escalations_fall_back_to_self_hosted_marked_and_counted(tmp_path):
    policy = yaml.safe_load((REPO / "policies/default.yaml").read_text(encoding="utf-8"))
    policy["models"]["auto"]["difficulty"] = {"scorer": "heuristic", "threshold": 0.05}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    with running_mock_openai(MockControl(models=["default"])) as (local_url, local):
        with running_gateway(path, {"LOCAL_ENGINE_URL": local_url}) as (url, _app):
            client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            msg = [{"role": "user", "content": "Prove that there are infinitely many primes."}]
            for model in ("auto", "gpt-4o"):  # a hard prompt, and the proprietary alias
                raw = client.chat.completions.with_raw_response.create(model=model, messages=msg)
                assert raw.headers["x-gateway-backend"] == "local"
                assert raw.headers["x-gateway-degraded"] == "proprietary-unconfigured"
            assert raw.headers["x-gateway-route-reason"] == "default"
            everyday = client.chat.completions.with_raw_response.create(
                model="local", messages=[{"role": "user", "content": "hi"}]
            )
            assert "x-gateway-degraded" not in everyday.headers
            assert len(local.requests) == 3
            # what self-hosted cannot serve is still a clear refusal
            image = {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                ],
            }
            r = httpx.post(
                url + "/v1/chat/completions", json={"model": "auto", "messages": [image]}
            )
            assert r.status_code == 503 and "local: no vision" in r.json()["error"]["message"]
            metrics = httpx.get(url + "/metrics").text
            assert (
                'gateway_degraded_requests_total{route_reason="hard-prompt",virtual_model="auto"} 1.0'
                in metrics
            )
            assert (
                'gateway_degraded_requests_total{route_reason="default",virtual_model="gpt-4o"} 1.0'
                in metrics
            )
