"""The gateway's /ready follows our engine's real health, not its model list.

A probe killed the engine's step loop: its /health said 503 until restart, but its /v1/models
still answered, and the gateway's /ready (which read /v1/models) kept listing the backend.
Real parts: our local_engine serving a tiny model on uvicorn, the gateway on uvicorn, httpx.
The engine's loop is stopped with its own shutdown(), while its HTTP server keeps running.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from gateway_server import running_gateway
from server_harness import running_app

from local_engine.config import EngineConfig
from local_engine.demo_model import build_tiny_checkpoint
from local_engine.server import create_app
from tests.support.policy import local_backend, policy_yaml


def _policy(engine: str) -> str:
    local = local_backend(f"{engine}/v1", model="default")
    return policy_yaml(backends={"local": local}, models={"auto": {"route": "local"}})


def test_ready_follows_engine_health_not_its_model_list(tmp_path):
    model_dir = build_tiny_checkpoint(tmp_path / "model", "qwen2")
    config = EngineConfig(
        model=str(model_dir), num_kv_blocks=32, max_num_seqs=4, max_num_batched_tokens=128
    )
    app = create_app(config)
    with running_app(app) as engine_url:
        policy = tmp_path / "policy.yaml"
        policy.write_text(_policy(engine_url))
        with running_gateway(policy, {}) as (base, _gw):
            r = httpx.get(base + "/ready")
            assert r.status_code == 200 and r.json() == {
                "status": "ready",
                "backends_up": ["local"],
            }
            engine = app.state.ctx.engine
            asyncio.run_coroutine_threadsafe(engine.shutdown(), engine._loop).result(60)
            assert httpx.get(engine_url + "/health").status_code == 503
            assert httpx.get(engine_url + "/v1/models").status_code == 200  # still listed
            deadline = time.monotonic() + 10  # /ready caches its probes for 2 s
            while (r := httpx.get(base + "/ready")).status_code == 200:
                assert time.monotonic() < deadline, r.json()
                time.sleep(0.2)
            assert r.status_code == 503
            assert r.json() == {"status": "not_ready", "backends_up": []}
