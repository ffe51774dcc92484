"""The learned router inside the gateway: a broken artefact never fails a request, and is counted."""

from __future__ import annotations

import httpx
from gateway_server import running_gateway
from openai import OpenAI

from tests.support.mock_openai import running_mock_openai

POLICY = """
backends:
  local: {{kind: openai_compatible, base_url: "{local}", model: m, self_hosted: true}}
  big: {{kind: openai_compatible, base_url: "{local}", model: big}}
models:
  auto:
    difficulty: {{scorer: learned, artifact: "{artifact}", threshold: 0.5}}
    rules:
      - {{name: hard, when: {{difficulty: hard}}, route: big}}
      - {{name: everyday, route: local}}
"""


def test_broken_artefact_falls_back_to_the_heuristic_and_is_counted(tmp_path):
    with running_mock_openai() as (url, _ctl):
        policy = tmp_path / "p.yaml"
        policy.write_text(POLICY.format(local=url, artifact=tmp_path / "no-such-router"))
        with running_gateway(policy, {}) as (base, _app):
            c = OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
            easy = c.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": "hi"}]
            )
            hard = c.chat.completions.with_raw_response.create(
                model="auto",
                messages=[
                    {
                        "role": "user",
                        "content": "Prove rigorously, step by step, that sqrt(2) is irrational. "
                        * 20,
                    }
                ],
            )
            assert easy.headers["x-gateway-route-reason"] == "everyday"
            assert (
                hard.headers["x-gateway-route-reason"] == "hard"
            )  # the heuristic still ranks it hard
            metrics = httpx.get(base + "/metrics").text
            line = next(
                x for x in metrics.splitlines() if x.startswith("gateway_router_failures_total ")
            )
            assert float(line.split()[1]) >= 2


def test_shipped_router_scores_in_the_request_path(tmp_path):
    with running_mock_openai() as (url, _ctl):
        policy = tmp_path / "p.yaml"
        policy.write_text(POLICY.format(local=url, artifact="builtin"))
        with running_gateway(policy, {}) as (base, _app):
            c = OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
            r = c.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": "hi"}]
            )
            assert r.headers["x-gateway-route-reason"] in ("hard", "everyday")
            metrics = httpx.get(base + "/metrics").text
            line = next(
                x for x in metrics.splitlines() if x.startswith("gateway_router_failures_total ")
            )
            assert float(line.split()[1]) == 0
