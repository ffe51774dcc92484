"""A self-hosted fleet through the real gateway, on loopback: replicas killed and restarted
while traffic runs, spill-over with residency counted at the mocks, prefix affinity, DNS."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gateway_server import running_gateway

from gateway.backends.fleet import FleetBackend
from gateway.config.fleet import FleetConfig
from gateway.config.schema import OpenAICompatConfig
from tests.support.mock_engine import EngineModel, MockEngine
from tests.support.mock_openai import running_mock_openai
from tests.support.servers import MockControl

OPENAI_KEY = "sk-fleet-openai"
CONFIDENTIAL = {"x-data-classification": "confidential"}
WAIT_S = 15.0

POLICY = """
backends:
  local:
    kind: openai_compatible
    model: default
    self_hosted: true
    retry: {{max_attempts: 1}}
    fleet:
      endpoints: [{endpoints}]
      metrics_interval_s: {interval}
      replica_circuit_breaker: {{failure_threshold: 1, cooldown_s: 0.5}}
      spill_over: {{max_waiting: 2, when_saturated: {when}}}
  openai:
    kind: openai_compatible
    base_url: {openai}
    model: gpt-4o
    api_key: os.environ/OPENAI_API_KEY
models:
  auto:
    fallbacks: [openai]
    rules:
      - name: confidential
        when: {{headers: {{x-data-classification: confidential}}}}
        route: local
        self_hosted_only: true
      - {{name: everyday, route: local}}
"""


def _policy(
    tmp: Path, engines: list[MockEngine], openai: str, when: str = "wait", interval: float = 0.1
) -> Path:
    path = tmp / "policy.yaml"
    endpoints = ", ".join(e.url for e in engines)
    path.write_text(POLICY.format(endpoints=endpoints, openai=openai, when=when, interval=interval))
    return path


def _chat(url: str, text: str, headers: dict | None = None, **extra) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics").text
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(w in line for w in want):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _until(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT_S}s: {what}")
        time.sleep(0.05)


def _replica_port(resp: httpx.Response) -> int:
    text = resp.json()["choices"][0]["message"]["content"]
    return int(re.match(r"replica (\d+) answers", text).group(1))


@pytest.fixture
def fleet_env(tmp_path):
    engines = [MockEngine(EngineModel(slots=8)).start() for _ in range(3)]
    try:
        with running_mock_openai(MockControl(api_key=OPENAI_KEY, models=["gpt-4o"])) as (
            openai_url,
            openai,
        ):
            yield engines, openai_url, openai
    finally:
        for e in engines:
            e.stop()


def test_replicas_killed_and_restarted_mid_run_lose_no_request(tmp_path, fleet_env):
    engines, openai_url, openai = fleet_env
    # one scrape at start only: the requests themselves must find the dead replicas
    policy = _policy(tmp_path, engines, openai_url, interval=600)
    with running_gateway(policy, {"OPENAI_API_KEY": OPENAI_KEY}) as (url, _app):
        statuses: list[tuple[int, str]] = []
        done = threading.Event()
        lock = threading.Lock()

        def client(worker: int) -> None:
            i = 0
            while not done.is_set() and i < 400:
                r = _chat(url, f"conversation {worker}-{i}: hello there")
                with lock:
                    statuses.append((r.status_code, r.headers.get("x-gateway-backend", "")))
                i += 1

        def served() -> int:
            with lock:
                return len(statuses)

        victim = engines[1]
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(client, w) for w in range(4)]
            _until(lambda: served() >= 20 and victim.requests > 0, "traffic reaches every replica")
            victim.stop()  # killed mid-run
            at_kill = served()
            _until(lambda: served() >= at_kill + 40, "traffic goes on without the victim")
            count_dead = victim.requests
            victim.start()  # restarted on the same port
            _until(lambda: victim.requests > count_dead, "the restarted replica serves again")
            engines[2].stop()  # and another one dies
            at_second = served()
            _until(lambda: served() >= at_second + 20, "traffic goes on with one replica")
            engines[2].start()
            done.set()
            for f in futures:
                f.result()
        assert statuses and all(s == (200, "local") for s in statuses), [
            s for s in statuses if s != (200, "local")
        ][:5]
        # the dead replicas were skipped inside the fleet: no request fell back to openai
        assert openai.requests == []
        assert _metric(url, "gateway_fallbacks_total") == 0
        victim_label = victim.url.split("//")[1].split("/")[0]
        assert _metric(url, "gateway_fleet_replica_requests_total", result="error") >= 1
        assert (
            _metric(url, "gateway_fleet_replica_requests_total", replica=victim_label, result="ok")
            >= 1
        )
        _until(lambda: _metric(url, "gateway_fleet_replica_up") == 3, "every replica is up again")


def _wait_reported(url: str, waiting: float) -> None:
    _until(
        lambda: all(
            v == waiting
            for v in [
                float(line.rsplit(" ", 1)[1])
                for line in httpx.get(url + "/metrics").text.splitlines()
                if line.startswith("gateway_fleet_replica_waiting_requests{")
            ]
            or [None]
        ),
        f"the gateway sees {waiting} waiting on every replica",
    )


def test_spill_over_sends_only_what_may_leave(tmp_path, fleet_env):
    engines, openai_url, openai = fleet_env
    policy = _policy(tmp_path, engines, openai_url, when="wait")
    with running_gateway(policy, {"OPENAI_API_KEY": OPENAI_KEY}) as (url, _app):
        assert _chat(url, "warm up").headers["x-gateway-backend"] == "local"
        for e in engines:
            e.report(waiting=10)  # every replica past max_waiting: 2
        _wait_reported(url, 10)
        at_replicas = sum(e.requests for e in engines)

        r = _chat(url, "an everyday question")
        assert r.status_code == 200 and r.headers["x-gateway-backend"] == "openai"
        assert len(openai.requests) == 1
        assert sum(e.requests for e in engines) == at_replicas  # spilled, not queued

        r = _chat(url, "the merger memo", headers=CONFIDENTIAL)
        assert r.status_code == 200 and r.headers["x-gateway-backend"] == "local"
        chunks = httpx.post(
            f"{url}/v1/chat/completions",
            json={
                "model": "auto",
                "stream": True,
                "messages": [{"role": "user", "content": "more on the memo"}],
            },
            headers=CONFIDENTIAL,
        )
        assert chunks.status_code == 200 and chunks.headers["x-gateway-backend"] == "local"
        assert len(openai.requests) == 1  # confidential waited on a replica, never left
        assert sum(e.requests for e in engines) == at_replicas + 2

        assert _metric(url, "gateway_fleet_spillover_total", outcome="spilled") == 1
        assert _metric(url, "gateway_fleet_spillover_total", outcome="waited") == 2
        assert _metric(url, "gateway_circuit_state", backend="local") == 0  # full, not failing

        for e in engines:
            e.report()  # the queues drain
        _wait_reported(url, 0)
        assert _chat(url, "back to normal").headers["x-gateway-backend"] == "local"
        assert len(openai.requests) == 1


def test_saturated_fleet_refuses_confidential_clearly_under_faults(tmp_path, fleet_env):
    engines, openai_url, openai = fleet_env
    policy = _policy(tmp_path, engines, openai_url, when="fail")
    with running_gateway(policy, {"OPENAI_API_KEY": OPENAI_KEY}) as (url, _app):
        for e in engines:
            e.report(waiting=10)
        _wait_reported(url, 10)
        engines[0].stop()  # and a replica dies meanwhile
        before = sum(e.requests for e in engines)
        for stream in (False, True):
            r = _chat(url, "the merger memo", headers=CONFIDENTIAL, stream=stream)
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["type"] == "no_backend_available"
            assert "must stay on self-hosted backends" in err["message"]
            assert "spill-over thresholds" in err["message"]
            assert "127.0.0.1" not in err["message"]  # no internal addresses to clients
        assert openai.requests == []
        assert sum(e.requests for e in engines) == before
        assert _metric(url, "gateway_fleet_spillover_total", outcome="refused") == 2
        r = _chat(url, "an everyday question")
        assert r.headers["x-gateway-backend"] == "openai" and len(openai.requests) == 1


def test_prefix_affinity_keeps_conversations_on_their_replica(tmp_path, fleet_env):
    engines, openai_url, _openai = fleet_env
    policy = _policy(tmp_path, engines, openai_url)
    with running_gateway(policy, {"OPENAI_API_KEY": OPENAI_KEY}) as (url, _app):
        homes: dict[int, set[int]] = {}
        for turn in range(3):
            for c in range(12):
                messages = [{"role": "system", "content": f"You are assistant number {c}."}]
                for t in range(turn + 1):
                    messages += [
                        {"role": "user", "content": f"question {t}"},
                        {"role": "assistant", "content": "an answer"},
                    ]
                r = httpx.post(
                    f"{url}/v1/chat/completions",
                    json={"model": "auto", "messages": messages[:-1]},
                )
                homes.setdefault(c, set()).add(_replica_port(r))
        assert all(len(ports) == 1 for ports in homes.values()), homes
        assert len({p for ports in homes.values() for p in ports}) >= 2  # and they spread
        assert _metric(url, "gateway_fleet_prefix_affinity_total", result="home") == 36


def test_dns_members_are_re_resolved():
    answers = [["10.9.9.1"], ["10.9.9.1", "10.9.9.2"], ["10.9.9.2"]]
    calls = []

    async def resolver(name: str, port: int) -> list[str]:
        calls.append((name, port))
        return answers[min(len(calls) - 1, len(answers) - 1)]

    async def scenario() -> list[list[str]]:
        fleet = FleetConfig(
            dns={"name": "engine.ns.svc.cluster.local", "port": 8000, "refresh_s": 0.05},
            metrics_path=None,
        )
        cfg = OpenAICompatConfig(kind="openai_compatible", model="m", self_hosted=True, fleet=fleet)
        backend = FleetBackend("local", cfg, fleet, resolver=resolver)
        seen = []
        backend.start()
        for _ in range(60):
            await asyncio.sleep(0.02)
            members = sorted(backend.balancer.replicas)
            if not seen or seen[-1] != members:
                seen.append(members)
            if len(seen) == 3:
                break
        await backend.close()
        return seen

    seen = asyncio.run(scenario())
    assert seen == [
        ["http://10.9.9.1:8000/v1"],
        ["http://10.9.9.1:8000/v1", "http://10.9.9.2:8000/v1"],
        ["http://10.9.9.2:8000/v1"],
    ]
    assert calls[0] == ("engine.ns.svc.cluster.local", 8000)


def test_dns_name_resolves_to_a_live_replica(tmp_path):
    with MockEngine() as engine:
        path = tmp_path / "policy.yaml"
        path.write_text(
            "backends:\n  local:\n    kind: openai_compatible\n    model: default\n"
            "    self_hosted: true\n    fleet:\n"
            f"      dns: {{name: 127.0.0.1, port: {engine.port}, refresh_s: 0.2}}\n"
            "models:\n  auto: {route: local}\n"
        )
        with running_gateway(path, {}) as (url, _app):
            r = _chat(url, "hello")
            assert r.status_code == 200, r.text
            assert _replica_port(r) == engine.port
