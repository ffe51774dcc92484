"""``gateway serve --local-engine``: the engine child is started and health-checked, restarted
when it dies, stopped with the gateway; and the README's first run answers in real words."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from gateway_server import free_port

from gateway.engine_supervisor import EngineStartError, EngineSupervisor, SupervisorConfig
from local_engine.demo_model import build_tiny_checkpoint
from tests.support.procs import (
    alive,
    cmdline,
    kill_leftovers,
    marked_env,
    marked_processes,
    new_marker,
)

ROOT = Path(__file__).resolve().parents[2]
ENGINE_FLAGS = ("--device", "cpu", "--num-kv-blocks", "64", "--max-model-len", "256")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(build_tiny_checkpoint(tmp_path_factory.mktemp("sup"), arch="qwen2"))


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(base_url.removesuffix("/v1") + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(predicate, timeout: float = 120) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def test_engine_is_restarted_when_killed_and_stopped_with_the_supervisor(tiny_model: Path) -> None:
    cfg = SupervisorConfig(model=str(tiny_model), port=free_port(), extra_args=ENGINE_FLAGS)
    sup = EngineSupervisor(cfg)
    sup.start()
    try:
        assert httpx.get(cfg.base_url + "/models", timeout=5).status_code == 200
        first = sup.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        _wait(lambda: sup.restarts == 1 and sup.pid != first)
        _wait(lambda: _healthy(cfg.base_url))
        second = sup.pid
    finally:
        sup.stop()
    assert second is not None and not alive(second) and not alive(first)


def test_engine_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    cfg = SupervisorConfig(model=str(tmp_path / "missing.gguf"), port=free_port())
    sup = EngineSupervisor(cfg)
    with pytest.raises(EngineStartError, match="exited with status 2 while starting"):
        sup.start()
    sup.stop()


@pytest.mark.slow
def test_first_run_gateway_with_the_demo_engine_answers_and_stops_it(tmp_path: Path) -> None:
    from local_engine.demo_gguf import demo_model_path
    from local_engine.loader import CheckpointError

    try:
        demo_model_path()
    except CheckpointError as exc:
        pytest.skip(str(exc))
    port = free_port()
    # the marker is inherited by the engine child, so only this test's own processes are checked
    marker = new_marker()
    env = marked_env(
        marker,
        {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")},
    )
    # a file, not a pipe: an engine left behind would hold a pipe open and hang the read
    log = tmp_path / "gateway.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--local-engine",
                "demo",
                "--port",
                str(port),
                "--watch-interval",
                "0",
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(base + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(up, timeout=400)
        engines = [pid for pid in marked_processes(marker) if "local_engine.cli" in cmdline(pid)]
        assert engines, "the supervised engine should carry the test's marker"
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
        raw = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0,
        )
        answer = raw.parse().choices[0].message.content
        assert "Paris" in (answer or "")
        assert raw.headers["x-gateway-backend"] == "local"
        metrics = httpx.get(base + "/metrics", timeout=5).text
        assert 'backend="local"' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            leftovers = kill_leftovers(marker)
    out = log.read_text()
    assert "local engine: ready" in out and "local engine: stopped" in out
    # nothing this test started outlives the gateway: not the engine it saw, nor a later restart
    assert leftovers == {}
