"""`gateway serve` without a policy serves the packaged default from any working directory, and a
policy file that is not there fails at once, naming where it was looked for. The real command in
a subprocess, started from a directory that is not the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from gateway_server import free_port
from test_cli_serve import wait_ready

from gateway.cli import build_parser
from gateway.cli_args import DEFAULT_POLICY
from tests.support.mock_openai import running_mock_openai

REPO = Path(__file__).resolve().parents[2]
DECOY = """
backends:
  local: {kind: openai_compatible, base_url: "http://127.0.0.1:9/v1", model: m, self_hosted: true}
models:
  decoy: {route: local}
"""


def elsewhere_env(**extra: str) -> dict[str, str]:
    """The caller's environment, minus what would change the default policy's backends, with
    the checkout importable (the cwd is not the checkout, so ``-m`` alone would not find it)."""
    drop = ("REDIS_URL", "DATABASE_URL", "OPENAI_", "ANTHROPIC_", "LOCAL_ENGINE_", "GATEWAY_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**env, **extra}


def gateway(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


def test_the_default_is_the_packaged_policy_not_a_cwd_relative_path():
    args = build_parser().parse_args(["serve"])
    assert args.policy == DEFAULT_POLICY and Path(DEFAULT_POLICY).is_absolute()
    # in a checkout the packaged file is the one the docs name (a link to it)
    assert Path(DEFAULT_POLICY).read_bytes() == (REPO / "policies" / "default.yaml").read_bytes()
    sim = build_parser().parse_args(["simulate", "--requests", "r.jsonl"])
    assert sim.policy == DEFAULT_POLICY


def test_serve_from_another_directory_serves_the_packaged_default(tmp_path):
    # a policies/default.yaml in the cwd is exactly what a cwd-relative default would pick up
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "default.yaml").write_text(DECOY)
    with running_mock_openai() as (url, _control):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            gateway("serve", "--port", str(port), "--watch-interval", "0"),
            cwd=tmp_path,
            env=elsewhere_env(LOCAL_ENGINE_URL=url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_ready(base, proc, timeout=120)  # the default policy loads the learned router
            models = {m["id"] for m in httpx.get(base + "/v1/models", timeout=10).json()["data"]}
            assert "auto" in models and "decoy" not in models, models
            body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
            r = httpx.post(base + "/v1/chat/completions", json=body, timeout=30)
            assert r.status_code == 200 and r.headers["x-gateway-backend"] == "local", r.text
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=30)
    assert f"(policy {DEFAULT_POLICY}," in out, out


def test_a_missing_policy_fails_before_binding_and_names_where_it_looked(tmp_path):
    port = free_port()
    for given in (["missing.yaml"], ["--policy", "sub/missing.yaml"]):
        res = subprocess.run(
            gateway("serve", *given, "--port", str(port)),
            cwd=tmp_path,
            env=elsewhere_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        looked = tmp_path / given[-1]
        assert res.returncode == 2, res.stderr
        assert (
            f"cannot read policy {given[-1]} (looked for {looked}): No such file or directory"
            in res.stderr
        ), res.stderr
        assert "gateway ready" not in res.stdout + res.stderr
    absolute = tmp_path / "gone.yaml"
    res = subprocess.run(
        gateway("check", str(absolute)),
        cwd=tmp_path,
        env=elsewhere_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert f"cannot read policy {absolute}: No such file or directory" in res.stderr
