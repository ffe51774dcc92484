"""The servers bench/gateway_bench.py compares, each started as its own pinned process.

mock (the upstream every target calls), our gateway (real CLI, one worker), the floor
(bench/passthrough_floor.py) and LiteLLM's proxy (``litellm --config``, one worker).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BenchError", "Server", "start_floor", "start_gateway", "start_litellm", "start_mock"]

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0
CLIENT_KEY = "sk-bench-client-0123456789"  # loopback-only throwaway keys
UPSTREAM_KEY = "sk-mock-upstream"
LITELLM_MASTER_KEY = "sk-bench-litellm-master"

POLICY = """\
version: 1
cache: {{enabled: false}}
metrics: {{enabled: true}}
savings:
  reference_pricing: {{input_usd_per_mtok: 2.5, output_usd_per_mtok: 10}}
auth:
  keys:
    - {{name: bench, key: os.environ/GATEWAY_BENCH_KEY, team: support}}
    - {{name: research, key: os.environ/GATEWAY_BENCH_KEY_2, team: premium}}
teams:
  support: {{}}
  premium: {{}}
backends:
  local:
    kind: openai_compatible
    base_url: {upstream}
    model: mock-model
    self_hosted: true
    pricing: {{gpu_usd_per_hour: 2.5, tokens_per_second: 1500}}
    capabilities: {{context_window: 32768, vision: false, tools: true}}
  frontier:
    kind: openai_compatible
    base_url: {upstream}
    model: mock-frontier
    api_key: os.environ/GATEWAY_BENCH_UPSTREAM_KEY
    pricing: {{input_usd_per_mtok: 2.5, output_usd_per_mtok: 10}}
    capabilities: {{context_window: 128000, vision: true, tools: true}}
models:
  auto:
    description: self-hosted first; vision, long context, premium team and hard prompts to the frontier
    difficulty: {{scorer: heuristic, threshold: 0.6}}
    fallbacks: [frontier]
    rules:
      - name: confidential-stays-home
        when:
          any:
            - headers: {{x-data-classification: [confidential, restricted]}}
            - metadata: {{data_classification: [confidential, restricted]}}
        route: local
        self_hosted_only: true
      - name: needs-vision
        when: {{needs: [vision]}}
        route: frontier
      - name: long-context
        when: {{exceeds_context_of: local}}
        route: frontier
      - name: premium-team
        when: {{teams: [premium], headers: {{x-priority: high}}}}
        route: frontier
      - name: hard-prompt
        when: {{difficulty: hard}}
        route: frontier
      - name: everyday
        route: local
"""

# The same gateway with two proprietary backends that take their callers' protocol natively
# (gateway.backends.native), chosen by a metadata rule after the confidential one: an Anthropic backend
# (kind litellm, anthropic/...) and a Responses server. Both are the mock upstream. A separate
# process: a litellm backend imports litellm, which the chat rows' gateway never does.
NATIVE_BACKENDS = """\
  claude:
    kind: litellm
    model: anthropic/mock-model
    base_url: {upstream}
    api_key: os.environ/GATEWAY_BENCH_UPSTREAM_KEY
    pricing: {{input_usd_per_mtok: 3, output_usd_per_mtok: 15}}
  responses:
    kind: openai_compatible
    base_url: {upstream}
    model: mock-model
    api_key: os.environ/GATEWAY_BENCH_UPSTREAM_KEY
    native_protocols: [responses]
    pricing: {{input_usd_per_mtok: 2.5, output_usd_per_mtok: 10}}
"""
NATIVE_RULES = """\
      - name: native-messages
        when: {{metadata: {{app: native-messages}}}}
        route: claude
      - name: native-responses
        when: {{metadata: {{app: native-responses}}}}
        route: responses
"""
NATIVE_POLICY = POLICY.replace("models:\n", NATIVE_BACKENDS + "models:\n", 1).replace(
    "      - name: needs-vision\n", NATIVE_RULES + "      - name: needs-vision\n", 1
)

LITELLM_CONFIG = """\
model_list:
  - model_name: auto
    litellm_params:
      model: openai/mock-model
      api_base: {upstream}
      api_key: {upstream_key}
litellm_settings:
  telemetry: false
  set_verbose: false
general_settings:
  master_key: {master}
"""


class BenchError(RuntimeError):
    """The benchmark cannot run as asked (a tool is missing, a server did not start)."""


@dataclass
class Server:
    name: str
    url: str  # its chat-completions URL
    key: str  # what clients send as the bearer token
    pid: int | None  # the process to account CPU to (None: not ours to measure)
    streams: bool = True  # relays SSE as SSE
    protocol: str = "chat"  # chat | messages (Anthropic) | responses (OpenAI Responses)
    native: bool = False  # its bodies ask for a backend that takes the protocol natively


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextmanager
def process(cmd: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path = ROOT):
    """Start ``cmd`` in its own session; stop its process group on exit."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=cwd
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def wait_ready(
    url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = START_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(
                f"{proc.args[0]} exited with {proc.returncode}; last log lines:\n{tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (an auth error is fine here)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise BenchError(
        f"{url} did not answer within {timeout_s:.0f} s; last log lines:\n{tail(log_path)}"
    )


def tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _pinned(core: int, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *cmd]


def start_mock(stack: ExitStack, workdir: Path, core: int, chunks: int) -> str:
    """Returns the mock's OpenAI base URL (``.../v1``)."""
    port = free_port()
    log = workdir / "mock.log"
    proc = stack.enter_context(
        process(
            [
                sys.executable,
                str(ROOT / "bench" / "mock_upstream.py"),
                "--port",
                str(port),
                "--cpu",
                str(core),
                "--chunks",
                str(chunks),
            ],
            log,
        )
    )
    wait_ready(f"http://{HOST}:{port}/health", proc, log)
    return f"http://{HOST}:{port}/v1"


def gateway_env(tree: Path = ROOT) -> dict[str, str]:
    env = {
        **os.environ,
        "GATEWAY_BENCH_KEY": CLIENT_KEY,
        "GATEWAY_BENCH_KEY_2": CLIENT_KEY + "-2",
        "GATEWAY_BENCH_UPSTREAM_KEY": UPSTREAM_KEY,
        "PYTHONPATH": str(tree),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def gateway_argv(policy: Path, port: int) -> list[str]:
    """``gateway serve`` as the benches run it: one worker on loopback, warnings only."""
    return [
        sys.executable, "-m", "gateway.cli", "serve", "--policy", str(policy),
        "--host", HOST, "--port", str(port), "--workers", "1", "--log-level", "warning",
    ]  # fmt: skip


def start_gateway(
    stack: ExitStack,
    workdir: Path,
    core: int,
    upstream: str,
    tree: Path = ROOT,
    name: str = "gateway",
    policy_text: str = POLICY,
) -> tuple[Server, Path]:
    """Our gateway from the source tree ``tree`` (another checkout gives an A/B comparison)."""
    policy = workdir / f"{name}-policy.yaml"  # one file each: a rewrite would make the other reload
    policy.write_text(policy_text.format(upstream=upstream))
    port = free_port()
    log = workdir / f"{name}.log"
    proc = stack.enter_context(
        process(
            _pinned(core, gateway_argv(policy, port)),
            log,
            gateway_env(tree),
            cwd=tree,
        )
    )
    wait_ready(f"http://{HOST}:{port}/health", proc, log)
    return Server(name, f"http://{HOST}:{port}/v1/chat/completions", CLIENT_KEY, proc.pid), policy


def start_floor(stack: ExitStack, workdir: Path, core: int, upstream: str) -> Server:
    port = free_port()
    log = workdir / "floor.log"
    proc = stack.enter_context(
        process(
            _pinned(
                core,
                [
                    sys.executable,
                    str(ROOT / "bench" / "passthrough_floor.py"),
                    "--port",
                    str(port),
                    "--upstream",
                    upstream,
                ],
            ),
            log,
        )
    )
    wait_ready(f"http://{HOST}:{port}/health", proc, log)
    return Server(
        "floor", f"http://{HOST}:{port}/v1/chat/completions", "unused", proc.pid, streams=False
    )


def start_litellm(
    stack: ExitStack, workdir: Path, core: int, upstream: str, litellm_bin: str
) -> Server:
    cfg = workdir / "litellm.yaml"
    cfg.write_text(
        LITELLM_CONFIG.format(
            upstream=upstream, upstream_key=UPSTREAM_KEY, master=LITELLM_MASTER_KEY
        )
    )
    port = free_port()
    # offline: the bundled model-cost map, no telemetry; no database, no Redis
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_ADMIN_UI": "True",
    }
    for var in ("DATABASE_URL", "REDIS_HOST", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(var, None)
    log = workdir / "litellm.log"
    try:
        proc = stack.enter_context(
            process(
                _pinned(
                    core,
                    [
                        litellm_bin,
                        "--config",
                        str(cfg),
                        "--host",
                        HOST,
                        "--port",
                        str(port),
                        "--num_workers",
                        "1",
                    ],
                ),
                log,
                env,
            )
        )
    except FileNotFoundError as exc:
        raise BenchError(f"cannot run {litellm_bin!r}: {exc}") from exc
    wait_ready(f"http://{HOST}:{port}/health/liveliness", proc, log)
    return Server(
        "litellm", f"http://{HOST}:{port}/v1/chat/completions", LITELLM_MASTER_KEY, proc.pid
    )


def litellm_version(litellm_bin: str) -> str | None:
    py = Path(litellm_bin).resolve().parent / "python"
    exe = str(py) if py.exists() else sys.executable
    out = subprocess.run(
        [exe, "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or None
