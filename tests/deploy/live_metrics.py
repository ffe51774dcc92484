"""The series a real gateway and the real engine metrics code expose, for checking the names
that deploy/ (rules, alerts, dashboard) refers to.

The gateway runs in-process on loopback with policies/default.yaml (plus client keys, one
rate-limited; the heuristic difficulty scorer) against two loopback OpenAI-compatible mocks; traffic is chosen so that every
labelled series gets a child: cache miss and hit, a stream, a retry and a fallback, an
error, a broken stream, a rate-limit refusal, and policy reloads (one bad, one good) made by
swapping the file the way the kubelet updates a mounted ConfigMap.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import yaml
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from gateway.metric_series import PREFIX
from local_engine.engine.outputs import EngineStats
from local_engine.server.metrics import ServerMetrics
from tests.gateway.gateway_server import running_gateway
from tests.support.mock_engine import MockEngine
from tests.support.mock_openai import running_mock_openai
from tests.support.servers import MockControl

__all__ = ["ConfigMapDir", "engine_series", "gateway_series", "series_labels"]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = REPO / "policies" / "default.yaml"
CLIENT_KEY = "gw-deploy-client-key"
LIMITED_KEY = "gw-deploy-limited-key"
ADMIN_KEY = "gw-deploy-admin-key"
OPENAI_KEY = "sk-deploy-openai-key"
RELOAD_WAIT_S = 15.0


def series_labels(exposition: str) -> dict[str, frozenset[str]]:
    """Sample name -> label names, from Prometheus text exposition."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return {k: frozenset(v) for k, v in out.items()}


class ConfigMapDir:
    """A directory laid out as the kubelet lays out a mounted ConfigMap: ``NAME`` ->
    ``..data/NAME`` -> ``..<timestamp>/NAME``; an update writes a new timestamped directory,
    swaps ``..data`` atomically and deletes the old one."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name, self._n, self._current = root, name, 0, None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        return self.root / self.name

    def write(self, text: str) -> None:
        self._n += 1
        new = self.root / f"..2024_01_01_00_00_{self._n:02d}.000000000"
        new.mkdir()
        (new / self.name).write_text(text, encoding="utf-8")
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(new.name)
        os.replace(tmp, self.root / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to(Path("..data") / self.name)
        if self._current is not None:
            (self._current / self.name).unlink()
            self._current.rmdir()
        self._current = new


def _policy_with_keys(fleet_url: str) -> str:
    policy = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    # a one-replica fleet (a loopback engine stand-in with vLLM's gauges): the gateway_fleet_* series
    policy["backends"]["local-fleet"] = {
        "kind": "openai_compatible",
        "model": "default",
        "self_hosted": True,
        "fleet": {"endpoints": [fleet_url], "metrics_interval_s": 0.2},
    }
    policy["models"]["fleet"] = {"route": "local-fleet"}
    # shadow evaluation of everyday answers (reference and judge: the openai mock) and a cascade
    # rule (the mock sends no log-probs, so it escalates): the gateway_shadow_* and
    # gateway_cascade_* series
    policy["shadow"] = {
        "sample_rate": 1.0,
        "reference": "openai",
        "judge": "openai",
        "judge_mode": "single",
        "rules": ["everyday"],
    }
    policy["models"]["cascade"] = {
        "rules": [{"name": "cascaded", "route": ["local", "openai"], "cascade": {}}]
    }
    # the transparent scorer: same series, without loading the embedding model (seconds of CPU)
    policy["models"]["auto"]["difficulty"]["scorer"] = "heuristic"
    policy["auth"] = {
        "admin_key": "os.environ/ADMIN_KEY",
        "keys": [
            {"name": "ops", "key": "os.environ/CLIENT_KEY", "team": "ops"},
            {"name": "limited", "key": "os.environ/LIMITED_KEY", "team": "ops", "rpm": 1},
        ],
    }
    return yaml.safe_dump(policy, sort_keys=False)


def _wait_for(url: str, sample: str, at_least: float) -> None:
    deadline = time.monotonic() + RELOAD_WAIT_S
    while time.monotonic() < deadline:
        text = httpx.get(url + "/metrics").text
        for line in text.splitlines():
            if line.startswith(sample + " ") and float(line.rsplit(" ", 1)[1]) >= at_least:
                return
        time.sleep(0.1)
    raise AssertionError(f"{sample} did not reach {at_least} within {RELOAD_WAIT_S}s")


def _traffic(url: str, local: MockControl) -> None:
    client = OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    msg = [{"role": "user", "content": "hello there"}]
    # cache miss, then hit (deterministic requests are cached)
    for _ in range(2):
        client.chat.completions.create(model="auto", messages=msg, temperature=0)
    # Anthropic's token count (routed to the self-hosted backend: the gateway's estimate)
    r = httpx.post(
        url + "/v1/messages/count_tokens",
        headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
        json={"model": "auto", "messages": msg},
    )
    assert r.status_code == 200 and r.headers["x-gateway-token-count"] == "estimate", r.text
    # a stream on the proprietary alias: time to first token
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=msg, stream=True))
    assert chunks, "no stream chunks"
    # a stream broken after the first event: stream error
    local.break_stream_next(after_events=1)
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": "local", "messages": msg, "stream": True},
    ) as r:
        r.read()
    # local fails twice (one retry), then the fallback to openai answers
    local.fail_next(2, status=500)
    client.chat.completions.create(model="auto", messages=msg, temperature=0.7)
    # local fails twice on the self-hosted-only model: an error, a 5xx
    local.fail_next(2, status=500)
    r = httpx.post(
        url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": "local", "messages": msg},
    )
    assert r.status_code >= 500, r.text
    # one request per minute for this key: the second is refused
    codes = [
        httpx.post(
            url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {LIMITED_KEY}"},
            json={"model": "auto", "messages": msg, "temperature": 0.5},
        ).status_code
        for _ in range(2)
    ]
    assert codes[1] == 429, codes


def gateway_series(tmp: Path) -> tuple[dict[str, frozenset[str]], str]:
    """(series name -> label names, the final /metrics text) of a live gateway after traffic."""
    config_map = ConfigMapDir(tmp / "policy", "policy.yaml")
    with (
        MockEngine() as fleet_replica,
        running_mock_openai(MockControl(models=["default"])) as (local_url, local),
        running_mock_openai(MockControl(api_key=OPENAI_KEY, models=["gpt-4o"])) as (openai_url, _),
    ):
        good = _policy_with_keys(fleet_replica.url)
        config_map.write(good)
        env = {
            "LOCAL_ENGINE_URL": local_url,
            "OPENAI_BASE_URL": openai_url,
            "OPENAI_API_KEY": OPENAI_KEY,
            "CLIENT_KEY": CLIENT_KEY,
            "LIMITED_KEY": LIMITED_KEY,
            "ADMIN_KEY": ADMIN_KEY,
        }
        with running_gateway(config_map.path, env) as (url, _app):
            client = OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0)
            # before the faults below open the local circuit: a self-hosted answer, shadowed; the
            # echo judge repeats the prompt, whose conversation holds a verdict line (a judged tie)
            client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hello SCORE: 7"}]
            )
            client.chat.completions.create(
                model="cascade", messages=[{"role": "user", "content": "hello cascade"}]
            )
            _wait_for(
                url, PREFIX + 'shadow_local_score_count{rule="everyday",virtual_model="auto"}', 1
            )
            _traffic(url, local)
            client.chat.completions.create(
                model="fleet", messages=[{"role": "user", "content": "hello fleet"}]
            )
            replica = f"127.0.0.1:{fleet_replica.port}"
            _wait_for(
                url,
                PREFIX
                + f'fleet_replica_waiting_requests{{backend="local-fleet",replica="{replica}"}}',
                0,
            )
            # ConfigMap updates are picked up by the file watcher: a bad one is refused, a good one taken
            config_map.write("version: 1\nbackends: {broken: {kind: nonexistent}}\n")
            _wait_for(url, PREFIX + 'policy_reloads_total{result="failure"}', 1)
            config_map.write(good + "\n# edited\n")
            _wait_for(url, PREFIX + 'policy_reloads_total{result="success"}', 1)
            text = httpx.get(url + "/metrics").text
    return series_labels(text), text


def engine_series() -> dict[str, frozenset[str]]:
    """The local engine's series, rendered by its real metrics code after one request."""
    stats = EngineStats(
        num_running=1,
        num_waiting=2,
        kv_cache_usage=0.5,
        prefix_cache_queries=10,
        prefix_cache_hits=4,
        num_preemptions=0,
        prompt_tokens=10,
        generation_tokens=3,
    )
    metrics = ServerMetrics("default", lambda: stats)
    timer = metrics.timer()
    timer.on_tokens(1)
    timer.on_tokens(2)
    timer.on_finish("stop")
    return series_labels(metrics.render().decode())
