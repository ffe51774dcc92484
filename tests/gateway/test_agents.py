"""Claude Code and Codex CLI, the real agents, through `gateway serve --policy policies/default.yaml`.

The self-hosted backend is a loopback OpenAI-compatible mock (answers ``echo: <last user
text>`` in text, tools or not); no provider key is set, so the proprietary backends are off.
Each agent must print the mock's answer, and the gateway must have served it locally.

The agents come from npm (``.ci/run`` installs them under ``$GW_AGENTS_DIR``, default
``~/.cache/gw-agents``). Outside CI a missing install skips these tests; in CI (``CI=true``)
it fails. Neither agent may reach the internet: telemetry, error reports and update checks are
off by their variables, and a dead proxy catches anything else (loopback is exempt), so a
stray call fails at once instead of hanging.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.gateway.gateway_server import free_port
from tests.support.mock_openai import running_mock_openai
from tests.support.servers import MockControl

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
AGENTS_DIR = Path(os.environ.get("GW_AGENTS_DIR") or Path.home() / ".cache" / "gw-agents")
BIN = AGENTS_DIR / "node_modules" / ".bin"
CLIENT_KEY = "sk-gw-agents-test"
AGENT_TIMEOUT_S = 120
NO_INTERNET = {
    "HTTPS_PROXY": "http://127.0.0.1:9",  # nothing listens on port 9: refused at once
    "HTTP_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


def _binary(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: .ci/run installs the agents with npm")
        pytest.skip(f"{name} not installed (npm install --prefix {AGENTS_DIR} ...)")
    return path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    home = tmp_path_factory.mktemp("agents-home")
    with running_mock_openai(MockControl(tool_calls=False)) as (upstream, control):
        port = free_port()
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "PYTHONPATH": str(ROOT),
            "LOCAL_ENGINE_URL": upstream,  # the default policy's self-hosted backend
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--policy", "policies/default.yaml"]
            + ["--port", str(port), "--watch-interval", "0"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait(base, proc)
            yield {"url": base, "control": control, "home": home}
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def _wait(base: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("gateway serve exited")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("gateway serve did not come up")


def _local_requests(base: str, protocol: str) -> float:
    """Requests the gateway answered from the self-hosted backend, for one protocol."""
    text = httpx.get(base + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("gateway_requests_total{") and 'backend="local"' in line:
            if f'protocol="{protocol}"' in line and 'status_class="2xx"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        env={"PATH": os.environ["PATH"], **NO_INTERNET, **env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=AGENT_TIMEOUT_S,
    )


def test_claude_code_through_the_gateway(gateway, tmp_path):
    claude = _binary("claude")
    base, control = gateway["url"], gateway["control"]
    before = len(control.requests)
    env = {
        "HOME": str(gateway["home"]),
        "ANTHROPIC_BASE_URL": base,
        "ANTHROPIC_API_KEY": CLIENT_KEY,
        **{
            f"ANTHROPIC_{v}": "auto"
            for v in (
                "MODEL",
                "SMALL_FAST_MODEL",
                "DEFAULT_HAIKU_MODEL",
                "DEFAULT_SONNET_MODEL",
                "DEFAULT_OPUS_MODEL",
            )
        },
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "4096",  # its default 32k does not fit a 32k window
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    r = _run([str(claude), "-p", "say banana-claude"], env, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("echo: ") and "say banana-claude" in r.stdout  # the mock's answer
    assert any(q.path.endswith("/chat/completions") for q in control.requests[before:])
    assert _local_requests(base, "anthropic") >= 1


def test_codex_exec_through_the_gateway(gateway, tmp_path):
    codex = _binary("codex")
    base, control = gateway["url"], gateway["control"]
    before = len(control.requests)
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(
        'model = "auto"\n'
        'model_provider = "gateway"\n'
        "check_for_update_on_startup = false\n"
        "[model_providers.gateway]\n"
        'name = "gateway"\n'
        f'base_url = "{base}/v1"\n'
        'env_key = "GATEWAY_API_KEY"\n'
        'wire_api = "responses"\n'
    )
    env = {
        "HOME": str(gateway["home"]),
        "CODEX_HOME": str(codex_home),
        "GATEWAY_API_KEY": CLIENT_KEY,
    }
    r = _run([str(codex), "exec", "--skip-git-repo-check", "say banana-codex"], env, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^echo: say banana-codex$", r.stdout, re.M), r.stdout  # the mock's answer
    assert any(q.path.endswith("/chat/completions") for q in control.requests[before:])
    assert _local_requests(base, "responses") >= 1
