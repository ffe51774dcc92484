"""The whole product offline: openai SDK -> gateway -> our local_engine serving a tiny model."""

from __future__ import annotations

from pathlib import Path

from gateway_server import running_gateway
from openai import OpenAI
from server_harness import running_server

from local_engine.config import EngineConfig
from local_engine.demo_model import build_tiny_checkpoint
from tests.support.policy import local_backend, policy_yaml


def _policy(engine: str, tokenizer: Path) -> str:
    local = local_backend(
        f"{engine}/v1",
        model="default",
        tokenizer=str(tokenizer),
        pricing={"gpu_usd_per_hour": 2.5, "tokens_per_second": 1500},
        capabilities={"context_window": 512, "tools": True},
    )
    return policy_yaml(backends={"local": local}, models={"auto": {"route": "local"}})


def test_conversation_through_gateway_to_local_engine(tmp_path):
    model_dir = build_tiny_checkpoint(tmp_path / "model", "qwen2")
    config = EngineConfig(
        model=str(model_dir), num_kv_blocks=64, max_num_seqs=8, max_num_batched_tokens=256
    )
    with running_server(config) as engine_url:
        policy = tmp_path / "policy.yaml"
        policy.write_text(_policy(engine_url, model_dir / "tokenizer.json"))
        with running_gateway(policy, {}) as (base, _app):
            client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
            convo = [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Name a colour."},
            ]
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=convo, max_tokens=12, temperature=0
            )
            r = raw.parse()
            assert raw.headers["x-gateway-backend"] == "local"
            assert r.usage.completion_tokens > 0 and r.choices[0].finish_reason in (
                "stop",
                "length",
            )
            convo += [
                {"role": "assistant", "content": r.choices[0].message.content},
                {"role": "user", "content": "Another."},
            ]
            chunks = list(
                client.chat.completions.create(
                    model="auto",
                    messages=convo,
                    max_tokens=12,
                    temperature=0,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            whole = client.chat.completions.create(
                model="auto",
                messages=convo,
                max_tokens=12,
                temperature=0,
                extra_headers={"Cache-Control": "no-cache"},
            )
            assert text == whole.choices[0].message.content  # greedy: streamed == whole
            assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
