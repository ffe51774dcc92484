"""The default policy plus a ``shadow:`` section, served by the real gateway against loopback
mocks: ``local`` = the OpenAI-compatible echo mock (self-hosted), ``openai`` = the scripted
reference/judge mock (judge_mock.py). Anthropic stays disabled (no key)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
from openai import OpenAI

from tests.gateway.gateway_server import running_gateway
from tests.shadow import judge_mock
from tests.support.mock_openai import running_mock_openai
from tests.support.servers import MockControl, running

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = ROOT / "policies" / "default.yaml"
OPENAI_KEY = "sk-upstream-openai-SHADOW-SECRET"


def policy_with_shadow(shadow_yaml: str, extra: str = "") -> str:
    """policies/default.yaml with a shadow: section (and any extra top-level YAML) appended."""
    return DEFAULT_POLICY.read_text() + "\nshadow:\n" + shadow_yaml + "\n" + extra


@contextmanager
def shadow_stack(
    tmp_path: Path, shadow_yaml: str, policy_text: Callable[[str], str] | None = None
) -> Iterator[dict]:
    local_ctl, ref_ctl = MockControl(models=["default"]), MockControl()
    with (
        running_mock_openai(local_ctl) as (local_url, _),
        running(judge_mock.create_app(ref_ctl)) as ref_base,
    ):
        text = policy_with_shadow(shadow_yaml)
        if policy_text is not None:
            text = policy_text(text)
        path = tmp_path / "policy.yaml"
        path.write_text(text)
        env = {
            "LOCAL_ENGINE_URL": local_url,
            "OPENAI_BASE_URL": ref_base + "/v1",
            "OPENAI_API_KEY": OPENAI_KEY,
        }
        with running_gateway(path, env) as (base, app):
            yield {
                "base": base,
                "app": app,
                "local": local_ctl,
                "ref": ref_ctl,
                "client": OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0),
            }


def chat(client: OpenAI, text: str, headers: dict | None = None):
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": text}],
        max_tokens=32,
        extra_headers=headers or {},
    )
    return raw.headers, raw.parse()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def metric(base: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    text = httpx.get(base + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def judge_calls(ctl: MockControl) -> int:
    return sum(1 for b in ctl.bodies("/chat/completions") if judge_mock.is_judge_request(b))


def reference_calls(ctl: MockControl) -> int:
    return sum(1 for b in ctl.bodies("/chat/completions") if not judge_mock.is_judge_request(b))
