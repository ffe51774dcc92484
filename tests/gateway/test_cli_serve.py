"""The real `gateway` command in a subprocess: check, serve, SIGHUP reload, several workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from gateway_server import free_port

from tests.support.mock_openai import running_mock_openai
from tests.support.policy import local_backend, policy_yaml


def _policy(url: str, **more_models: dict) -> str:
    local = local_backend(url, model="m")
    return policy_yaml(
        backends={"local": local}, models={"auto": {"route": "local"}, **more_models}
    )


def gateway_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


def start_serve(tmp_path, upstream_url: str, *flags: str) -> tuple[subprocess.Popen, str, object]:
    """`gateway serve` on a free port with a one-backend policy; returns (process, base URL, policy path)."""
    policy = tmp_path / "p.yaml"
    policy.write_text(_policy(upstream_url))
    port = free_port()
    proc = subprocess.Popen(
        gateway_cmd(
            "serve", "--policy", str(policy), "--port", str(port), "--watch-interval", "0", *flags
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}", policy


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(base + "/health", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("gateway did not come up")


def test_check_prints_decisions_and_rejects_bad_files(tmp_path):
    shipped = os.path.join(os.path.dirname(__file__), "..", "..", "policies", "default.yaml")
    env = {**os.environ, "OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"}
    out = subprocess.run(
        gateway_cmd("check", shipped), capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert (
        "confidential data" in out.stdout
        and "refused" not in out.stdout.split("confidential data")[1].splitlines()[0]
    )
    assert "image input" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("backends: {}\nmodels: {}\nextra_key: 1\n")
    out = subprocess.run(gateway_cmd("check", str(bad)), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "extra_key" in out.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_sighup_reload_and_workers(tmp_path, workers):
    with running_mock_openai() as (url, control):
        proc, base, policy = start_serve(tmp_path, url, "--workers", str(workers))
        try:
            wait_ready(base, proc)
            body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
            for _ in range(6):
                r = httpx.post(base + "/v1/chat/completions", json=body, timeout=10)
                assert r.status_code == 200 and r.headers["x-gateway-backend"] == "local"
            metrics = httpx.get(base + "/metrics").text
            # with several workers every scrape still sees all requests
            line = next(x for x in metrics.splitlines() if x.startswith("gateway_requests_total{"))
            assert float(line.rsplit(" ", 1)[1]) == 6.0
            if workers == 1:
                policy.write_text(_policy(url, alias={"route": "local"}))
                time.sleep(1.5)  # watching is off: nothing changes by itself
                assert "alias" not in httpx.get(base + "/v1/models").text
                proc.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 10
                while "alias" not in httpx.get(base + "/v1/models").text:
                    assert time.monotonic() < deadline, "SIGHUP did not reload the policy"
                    time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)


def test_access_log_never_prints_a_query_string_key(tmp_path):
    with running_mock_openai() as (url, _control):
        proc, base, _policy = start_serve(tmp_path, url, "--access-log")
        try:
            wait_ready(base, proc)
            assert (
                httpx.get(base + "/v1/models?api_key=sk-live-SECRET123", timeout=10).status_code
                == 200
            )
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=30)
    assert "/v1/models?<redacted>" in out  # the line is logged ...
    assert "SECRET123" not in out  # ... without the key


def test_version_and_policy_given_either_way(tmp_path):
    out = subprocess.run(gateway_cmd("--version"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("gateway 0.")
    shipped = os.path.join(os.path.dirname(__file__), "..", "..", "policies", "local-only.yaml")
    by_option = subprocess.run(
        gateway_cmd("check", "--policy", shipped), capture_output=True, text=True, timeout=60
    )
    by_position = subprocess.run(
        gateway_cmd("check", shipped), capture_output=True, text=True, timeout=60
    )
    assert by_option.returncode == 0 and by_option.stdout == by_position.stdout
    other = tmp_path / "other.yaml"
    both = subprocess.run(
        gateway_cmd("check", shipped, "--policy", str(other)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert both.returncode == 2 and "two policy files given" in both.stderr
    serve_help = subprocess.run(
        gateway_cmd("serve", "--help"), capture_output=True, text=True, timeout=60
    )
    assert "(default: 4000" in serve_help.stdout and "(default: 127.0.0.1" in serve_help.stdout


def test_check_speaks_plainly(tmp_path):
    shipped = os.path.join(os.path.dirname(__file__), "..", "..", "policies", "default.yaml")
    out = subprocess.run(gateway_cmd("check", shipped), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "{'" not in text and "Condition(" not in text and "=[" not in text  # no reprs
    assert "header x-data-classification in (confidential, restricted)" in text
    assert "-> openai, anthropic then openai, anthropic" not in text  # no repeated lists
    rule = next(x for x in text.splitlines() if x.startswith("  rule confidential-stays-home"))
    assert "then openai" not in rule and "self-hosted only" in rule
    # no provider keys here: the hard prompt is served self-hosted, and it says so
    hard = next(x for x in text.splitlines() if "hard prompt" in x)
    assert "-> local" in hard and "degraded" in hard


def test_serve_binds_first_then_says_ready_and_what_is_available(tmp_path):
    with running_mock_openai() as (url, _control):
        proc, base, _policy = start_serve(tmp_path, url)
        try:
            wait_ready(base, proc)
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=30)
    port = base.rsplit(":", 1)[1]
    assert f"gateway ready on http://127.0.0.1:{port}" in out
    assert "available: local (self-hosted)" in out
    # the port is busy now: a clear failure, before anything claims to be ready
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        policy = tmp_path / "p.yaml"
        res = subprocess.run(
            gateway_cmd("serve", str(policy), "--port", str(taken)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert res.returncode != 0
    assert f"cannot listen on 127.0.0.1:{taken}: Address already in use" in res.stderr
    assert "gateway ready" not in res.stdout + res.stderr


def _recv_all(s: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_closes_idle_and_slow_header_connections(tmp_path, workers):
    """A probe kept 2,000 idle sockets and slow-header connections open for minutes."""
    with running_mock_openai() as (url, _control):
        proc, base, _ = start_serve(
            tmp_path, url, "--workers", str(workers), "--header-timeout", "1"
        )
        host, port = base.removeprefix("http://").split(":")
        try:
            wait_ready(base, proc)
            with (
                socket.create_connection((host, int(port)), timeout=15) as idle,
                socket.create_connection((host, int(port)), timeout=15) as slow,
            ):
                slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and stalls
                t = time.monotonic()
                for s in (idle, slow):
                    got = _recv_all(s)
                    assert got.startswith(b"HTTP/1.1 408"), got
                    assert b"request_timeout" in got
                assert time.monotonic() - t < 12  # loose: the contrast is never
            # the gateway still serves
            assert httpx.get(base + "/health", timeout=10).status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)


def _counted_connection(host: str, port: int, deadline: float) -> socket.socket:
    """A connection the gateway holds open and counts: it answers a request on it and keeps
    it alive. A 503 means a connection closed just before (wait_ready's) is not yet seen gone
    by the server: try again, instead of guessing how long that takes."""
    while True:
        s = socket.create_connection((host, port), timeout=15)
        s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        got = s.recv(65536)
        if got.startswith(b"HTTP/1.1 200"):
            return s
        s.close()
        assert got.startswith(b"HTTP/1.1 503") and time.monotonic() < deadline, got
        time.sleep(0.1)


def test_serve_caps_open_connections(tmp_path):
    with running_mock_openai() as (url, _control):
        proc, base, _ = start_serve(tmp_path, url, "--max-connections", "4")
        host, port = base.removeprefix("http://").split(":")
        held: list[socket.socket] = []
        try:
            wait_ready(base, proc)
            deadline = time.monotonic() + 30
            for _ in range(4):
                held.append(_counted_connection(host, int(port), deadline))
            with socket.create_connection((host, int(port)), timeout=15) as extra:
                got = _recv_all(extra)
            assert got.startswith(b"HTTP/1.1 503") and b"too_many_connections" in got, got
            for s in held:
                s.close()
            held.clear()
            deadline = time.monotonic() + 10
            while True:  # the slots come back once they are closed
                try:
                    if httpx.get(base + "/health", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline
                time.sleep(0.2)
        finally:
            for s in held:
                s.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
