"""`gateway serve --router-threads`: torch's threads for the learned router, per worker process."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from gateway_server import free_port
from test_cli_serve import gateway_cmd, wait_ready

from gateway.router.threads import ENV, RouterThreads, usable_cpus
from tests.support.mock_openai import running_mock_openai
from tests.support.policy import local_backend, policy_yaml

LINE = "learned router: torch intra-op threads"
WARNING = "torch threads exceed the"
LEARNED = {"scorer": "learned", "artifact": "builtin", "threshold": 0.5}


def _learned_policy(url: str, difficulty: dict = LEARNED) -> str:
    return policy_yaml(
        backends={"local": local_backend(url, model="m"), "big": local_backend(url, model="big")},
        models={
            "auto": {
                "difficulty": difficulty,
                "rules": [
                    {"name": "hard", "when": {"difficulty": "hard"}, "route": "big"},
                    {"name": "everyday", "route": "local"},
                ],
            }
        },
    )


def _serve(
    tmp_path, policy_text: str, *flags: str, env: dict | None = None
) -> tuple[str, str, bool]:
    """Start `gateway serve`, send one chat request, stop; (route reason, everything it printed,
    whether libtorch was mapped into the serving process: one worker serves in the main one)."""
    policy = tmp_path / "p.yaml"
    policy.write_text(policy_text)
    port = free_port()
    proc = subprocess.Popen(
        gateway_cmd("serve", str(policy), "--port", str(port), "--watch-interval", "0", *flags),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**{k: v for k, v in os.environ.items() if k != ENV}, **(env or {})},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, timeout=90)
        body = {
            "model": "auto",
            "messages": [{"role": "user", "content": "Prove that 7 is prime."}],
        }
        r = httpx.post(base + "/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 200, r.text
        reason = r.headers["x-gateway-route-reason"]
        torch_loaded = "libtorch" in Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    return reason, out, torch_loaded


def _thread_lines(out: str) -> list[str]:
    return [x for x in out.splitlines() if LINE in x]


@pytest.mark.parametrize("workers", [1, 2])
def test_each_worker_runs_the_router_on_one_thread_by_default(tmp_path, workers):
    with running_mock_openai() as (url, _ctl):
        reason, out, torch_loaded = _serve(
            tmp_path, _learned_policy(url), "--workers", str(workers)
        )
    assert reason in ("hard", "everyday")  # the learned router scored the request
    lines = _thread_lines(out)
    assert len(lines) == workers, out  # once per worker process, at its start
    said = f"{LINE} 1 in this worker ({workers} worker(s) on {usable_cpus()} CPUs;"
    for line in lines:  # the count torch reports after it was set, not the one asked for
        assert said in line, line
    assert WARNING not in out
    assert torch_loaded or workers > 1  # with workers, the main process only supervises


def test_an_explicit_count_is_applied_and_oversubscription_is_warned_about(tmp_path):
    with running_mock_openai() as (url, _ctl):
        reason, out, _torch = _serve(
            tmp_path, _learned_policy(url), "--workers", "2", env={ENV: "2"}
        )
    assert reason in ("hard", "everyday")
    lines = _thread_lines(out)
    assert len(lines) == 2 and all(f"{LINE} 2 in this worker" in x for x in lines), out
    assert out.count(WARNING) == (2 if 2 * 2 > usable_cpus() else 0), out


def test_only_a_learned_router_loads_torch(tmp_path):
    heuristic = {"scorer": "heuristic", "threshold": 0.5}
    with running_mock_openai() as (url, _ctl):
        _reason, out, torch_loaded = _serve(
            tmp_path, _learned_policy(url, heuristic), "--router-threads", "3"
        )
    assert _thread_lines(out) == [] and not torch_loaded, out


@pytest.mark.parametrize(
    ("flags", "env", "shown"),
    [
        (["--router-threads", "two"], {}, "'two'"),
        (["--router-threads", "0"], {}, "'0'"),
        ([], {ENV: "1.5"}, "'1.5'"),
    ],
)
def test_a_bad_count_is_a_usage_error_naming_the_flag(tmp_path, flags, env, shown):
    policy = tmp_path / "p.yaml"
    policy.write_text(_learned_policy("http://127.0.0.1:9/v1"))
    res = subprocess.run(
        gateway_cmd("serve", str(policy), "--port", str(free_port()), *flags),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert res.returncode == 2
    assert "argument --router-threads: expected a positive whole number of threads" in res.stderr
    assert shown in res.stderr and ENV in res.stderr


def test_a_worker_started_without_the_cli_names_the_variable_of_a_bad_count():
    with pytest.raises(ValueError, match=f"^{ENV}: expected a positive .* got 'many'"):
        RouterThreads.from_env({ENV: "many"})
    assert RouterThreads.from_env({}) is None  # not started by `gateway serve`: torch's own


def _reloads(base: str) -> float:
    text = httpx.get(base + "/metrics", timeout=10).text
    line = 'gateway_policy_reloads_total{result="success"} '
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line))


def test_a_reload_that_adds_the_learned_router_sets_the_threads_then(tmp_path):
    with running_mock_openai() as (url, _ctl):
        policy = tmp_path / "p.yaml"
        policy.write_text(_learned_policy(url, {"scorer": "heuristic", "threshold": 0.5}))
        port = free_port()
        proc = subprocess.Popen(
            gateway_cmd("serve", str(policy), "--port", str(port), "--watch-interval", "0"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, ENV: "1"},
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, proc, timeout=90)
            assert "libtorch" not in Path(f"/proc/{proc.pid}/maps").read_text()
            policy.write_text(_learned_policy(url))
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 90
            while _reloads(base) < 1:
                assert time.monotonic() < deadline, "the reload did not finish"
                time.sleep(0.2)
            body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
            r = httpx.post(base + "/v1/chat/completions", json=body, timeout=30)
            assert r.status_code == 200 and r.headers["x-gateway-route-reason"] in (
                "hard",
                "everyday",
            )
            assert "libtorch" in Path(f"/proc/{proc.pid}/maps").read_text()
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=60)
    lines = _thread_lines(out)
    assert len(lines) == 1 and f"{LINE} 1 in this worker" in lines[0], out
    # set before the reloaded runtime's learned scorer was built, not at start-up
    assert out.index("gateway ready") < out.index(LINE) < out.index("learned router ready"), out
