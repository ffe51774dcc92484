"""Policy reloads under a file being written, and reloads that take long.

A probe wrote the policy file in two steps: the watcher read the first half, a valid policy
without its confidential rule's ``self_hosted_only: true`` (confidential requests reached the
proprietary mock) or without ``auth:`` (keyless requests were served). Now the watcher waits
for the file to settle and refuses a change that loosens auth or residency the way a cut file
does; an explicit reload applies it. A reload also builds the new runtime off the event loop.

Real parts: the gateway on uvicorn with its file watcher, loopback OpenAI-compatible mocks
counting what reaches them, httpx.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from gateway.config.loader import parse_policy
from gateway.config.loosening import loosenings
from tests.gateway.gateway_server import running_gateway
from tests.gateway.qa_support import metric_value
from tests.support.mock_openai import running_mock_openai

CLIENT_KEY = "reload-client-key-ECHO"
ADMIN_KEY = "reload-admin-key-FOXTROT"
ENV = {"CLIENT_KEY": CLIENT_KEY, "ADMIN_KEY": ADMIN_KEY, "OPENAI_API_KEY": "sk-reload-SECRET"}
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
CONFIDENTIAL = {**AUTH, "x-data-classification": "confidential"}
CUT = "        self_hosted_only: true\n"

# The confidential rule is last, its self_hosted_only line the file's last line but the auth
# section's: cutting the file there leaves a valid policy that lets confidential data leave.
BODY = """
server: {{request_timeout_s: 10}}
cache: {{enabled: false}}
backends:
  local:
    kind: openai_compatible
    base_url: {local}
    model: qwen-local
    self_hosted: true
    retry: {{max_attempts: 1}}
    circuit_breaker: {{failure_threshold: 1000, cooldown_s: 60}}
  openai:
    kind: openai_compatible
    base_url: {openai}
    model: gpt-4o
    api_key: os.environ/OPENAI_API_KEY
    retry: {{max_attempts: 1}}
models:
  auto:
    description: "{description}"
    fallbacks: [openai]
    rules:
      - name: confidential
        when: {{headers: {{x-data-classification: confidential}}}}
        route: local
{cut}"""
AUTH_SECTION = """auth:
  admin_key: os.environ/ADMIN_KEY
  keys:
    - {name: alpha, key: os.environ/CLIENT_KEY, team: alpha}
"""


def policy_text(local: str, openai: str, description: str = "v1") -> str:
    return AUTH_SECTION + BODY.format(local=local, openai=openai, description=description, cut=CUT)


# ---------------------------------------------------------------- what counts as looser


def _policy(text: str):
    return parse_policy(text, ENV).policy


def test_loosenings_name_what_a_cut_file_loses():
    full = policy_text("http://l/v1", "http://o/v1")
    old = _policy(full)
    assert loosenings(old, old) == []
    no_home = full.replace(CUT, "")
    assert loosenings(old, _policy(no_home)) == [
        "models.auto rule 'confidential': is no longer self_hosted_only"
    ]
    no_auth = full.replace(AUTH_SECTION, "")
    (why,) = loosenings(old, _policy(no_auth))
    assert why.startswith("auth: API keys were required")
    # tighter or unrelated changes are not loosenings
    tighter = full.replace("fallbacks: [openai]", "fallbacks: []")
    assert loosenings(old, _policy(tighter)) == []
    assert loosenings(_policy(no_home), old) == [] and loosenings(_policy(no_auth), old) == []


def test_loosenings_of_conditions_keys_and_data_rules():
    full = policy_text("http://l/v1", "http://o/v1")
    old = _policy(full)
    wider = full.replace("x-data-classification: confidential", "x-data-classification: secret")
    assert "its condition changed" in loosenings(old, _policy(wider))[0]
    keyed = full.replace("team: alpha}", "team: alpha, models: [auto]}")
    assert "now to none" in loosenings(_policy(keyed), old)[0]
    data = full + (
        "data_rules:\n  - name: pii\n    when: {headers: {x-pii: 'yes'}}\n"
        "    only: {self_hosted_only: true}\n"
    )
    assert loosenings(_policy(data), old) == ["data_rules 'pii': is gone"]
    weaker = data.replace("only: {self_hosted_only: true}", "only: {deny_backends: [openai]}")
    assert loosenings(_policy(data), _policy(weaker)) == [
        "data_rules 'pii': lets more backends through"
    ]


# ---------------------------------------------------------------- through the gateway


@pytest.fixture()
def setup(tmp_path):
    with running_mock_openai() as (local, local_ctl), running_mock_openai() as (oai, oai_ctl):
        path = tmp_path / "policy.yaml"
        path.write_text(policy_text(local, oai))
        with running_gateway(path, ENV) as (base, app):
            yield {
                "base": base,
                "path": path,
                "local": local,
                "openai": oai,
                "local_ctl": local_ctl,
                "oai_ctl": oai_ctl,
                "app": app,
            }


def _until(pred, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def _failed_reloads(base: str) -> float:
    text = httpx.get(base + "/metrics").text
    return metric_value(text, "gateway_policy_reloads_total", result="failure")


def _write_in_two_steps(path: Path, text: str, cut_at: int, base: str) -> None:
    """Truncate and write the first part, make it visible, wait until the watcher has read and
    refused it (a failed reload counted: not a pause that a slow machine may outlast), then
    write the rest."""
    with open(path, "w") as f:
        f.write(text[:cut_at])
        f.flush()
        os.fsync(f.fileno())
        _until(lambda: _failed_reloads(base) >= 1, timeout_s=30)
        f.write(text[cut_at:])


def _description(base: str) -> str:
    return httpx.get(base + "/v1/models/auto", headers=AUTH).json()["description"]


class _Hammer:
    """Sends one kind of request in a loop from a thread; keeps every status seen."""

    def __init__(self, base: str, headers: dict) -> None:
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(base, headers), daemon=True)

    def _run(self, base: str, headers: dict) -> None:
        with httpx.Client(timeout=15) as c:
            while not self._stop.is_set():
                r = c.post(
                    base + "/v1/chat/completions",
                    headers=headers,
                    json={"model": "auto", "messages": [{"role": "user", "content": "secret"}]},
                )
                self.statuses.append(r.status_code)
                time.sleep(0.05)

    def __enter__(self) -> _Hammer:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join(timeout=20)


def test_file_cut_before_self_hosted_only_never_lets_confidential_data_leave(setup):
    base, path = setup["base"], setup["path"]
    setup["local_ctl"].fail_next(10_000, 500)  # the self-hosted backend is down: fallback bait
    new = policy_text(setup["local"], setup["openai"], description="v2")
    with _Hammer(base, CONFIDENTIAL) as h:
        _write_in_two_steps(path, new, new.index(CUT), base)
        _until(lambda: _description(base) == "v2")  # the whole file is applied in the end
        time.sleep(0.5)
    assert h.statuses and set(h.statuses) == {503}, h.statuses  # never 200 from elsewhere
    assert setup["oai_ctl"].requests == []  # nothing reached the proprietary upstream
    text = httpx.get(base + "/metrics").text
    assert metric_value(text, "gateway_policy_reloads_total", result="failure") >= 1  # refused


def test_file_cut_before_auth_never_serves_keyless_requests(setup):
    base, path = setup["base"], setup["path"]
    body_first = BODY.format(
        local=setup["local"], openai=setup["openai"], description="v2", cut=CUT
    )
    new = body_first + AUTH_SECTION  # auth at the end this time: the cut drops it
    with _Hammer(base, {}) as h:
        _write_in_two_steps(path, new, len(body_first), base)
        _until(lambda: _description(base) == "v2")
        time.sleep(0.5)
    assert h.statuses and set(h.statuses) == {401}, h.statuses
    assert setup["local_ctl"].requests == [] and setup["oai_ctl"].requests == []


def test_a_loosening_applies_when_asked_for_explicitly(setup):
    base, path = setup["base"], setup["path"]
    open_policy = BODY.format(
        local=setup["local"], openai=setup["openai"], description="open", cut=CUT
    )
    path.write_text(open_policy)
    _until(lambda: _failed_reloads(base) >= 1, timeout_s=30)  # the watcher refuses it ...
    assert httpx.post(base + "/v1/chat/completions", json={}).status_code == 401
    r = httpx.post(base + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text  # ... the admin applies it
    assert _description(base) == "open"
    r = httpx.post(
        base + "/v1/chat/completions",
        headers={"x-data-classification": "confidential"},  # no key needed now
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200, r.text


def _reload_while_polling(base: str) -> tuple[float, int, httpx.Response]:
    """POST /admin/reload while another thread polls /health: (seconds the reload took,
    health answers strictly inside that time, the reload's answer)."""
    answered: list[float] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=30) as c:
            while not done.is_set():
                if c.get(base + "/health").status_code == 200:
                    answered.append(time.monotonic())
                time.sleep(0.02)

    t = threading.Thread(target=poll, daemon=True)
    t0 = time.monotonic()
    t.start()
    r = httpx.post(
        base + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=300
    )
    t1 = time.monotonic()
    done.set()
    t.join(timeout=30)
    return t1 - t0, len([a for a in answered if t0 + 0.2 < a < t1 - 0.2]), r


def test_a_slow_reload_does_not_stall_traffic(setup, tmp_path):
    """The new runtime (here: calibrating a threshold on a large sample) is built off the loop:
    /health keeps answering while it is built. The sample grows until the build takes over a
    second, so the contrast holds on a fast machine too (a stalled loop answers nothing)."""
    base, path = setup["base"], setup["path"]
    sample = tmp_path / "sample.jsonl"
    line = "Explain step by step why the proof of this theorem holds, then write the code. " * 12
    slow = policy_text(setup["local"], setup["openai"], description="calibrated").replace(
        '    description: "calibrated"\n',
        '    description: "calibrated"\n'
        "    difficulty: {scorer: heuristic, escalate_share: 0.2, "
        f'calibration_sample: "{sample}"}}\n',
    )
    slow = slow.replace(
        CUT, CUT + "      - {name: hard, when: {difficulty: hard}, route: openai}\n"
    )
    for prompts in (12_000, 36_000, 108_000):
        with open(sample, "w") as f:
            for i in range(prompts):
                f.write(json.dumps({"prompt": f"{i} {line}"}) + "\n")
        path.write_text(slow)
        took, during, r = _reload_while_polling(base)
        assert r.status_code == 200, r.text
        if took > 1.0:
            break
    assert _description(base) == "calibrated"
    assert took > 1.0, took  # slow enough to tell
    assert during >= 3, (took, during)


def test_the_watcher_survives_a_file_that_broke_the_loader(setup):
    """A deeply nested file raised RecursionError inside the watch task, which died: later
    good changes were never applied."""
    base, path = setup["base"], setup["path"]
    path.write_text("backends: " + "[" * 5000 + "]" * 5000 + "\n")
    _until(lambda: _failed_reloads(base) >= 1, timeout_s=30)  # tried, and failed
    assert _description(base) == "v1"  # the running policy keeps serving
    path.write_text(policy_text(setup["local"], setup["openai"], description="after"))
    _until(lambda: _description(base) == "after")


# ---------------------------------------------------------------- the build's own thread


async def test_in_own_thread_runs_on_a_thread_that_ends():
    """Not asyncio's pool: a pool thread that ran torch keeps an OpenMP team alive, which slows
    every later encode on the event loop (gateway/server/policy_store.py)."""
    from gateway.server.policy_store import in_own_thread

    ran: list[threading.Thread] = []

    def work() -> int:
        ran.append(threading.current_thread())
        return 42

    assert await in_own_thread(work, "policy-build") == 42
    (thread,) = ran
    assert thread is not threading.main_thread() and thread.name == "policy-build"
    thread.join(timeout=5)
    assert not thread.is_alive()

    def broken() -> None:
        raise ValueError("bad policy")

    with pytest.raises(ValueError, match="bad policy"):
        await in_own_thread(broken, "policy-build")


async def test_a_reload_builds_the_runtime_on_a_thread_that_ends(tmp_path):
    from gateway.metrics import GatewayMetrics
    from gateway.server.policy_store import PolicyStore

    path = tmp_path / "policy.yaml"
    path.write_text(policy_text("http://127.0.0.1:9", "http://127.0.0.1:9"))
    store = PolicyStore(path, ENV, GatewayMetrics())
    built_on: list[threading.Thread] = []
    build = store._build

    def recording_build(previous):
        built_on.append(threading.current_thread())
        return build(previous)

    store._build = recording_build
    path.write_text(policy_text("http://127.0.0.1:9", "http://127.0.0.1:9", description="v2"))
    ok, _ = await store.reload("test")
    assert ok and store.runtime.policy.models["auto"].description == "v2"
    (thread,) = built_on
    assert thread is not threading.main_thread()
    thread.join(timeout=5)
    assert not thread.is_alive()
