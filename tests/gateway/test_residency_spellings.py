"""Confidential data never leaves, however the client spells it (issue 8 item 7) and whatever
model it names, under faults too: the shipped policies/default.yaml against loopback mocks,
counting the requests each mock receives.

Before the data rules, each of these reached the proprietary mock: ``Confidential``,
``confidential, internal``, two headers, metadata as a list, or another model name."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from gateway_server import running_gateway

from tests.support.mock_openai import running_mock_openai
from tests.support.servers import MockControl

ROOT = Path(__file__).resolve().parents[2]
H = "x-data-classification"

# (headers as a list of pairs, metadata)
SPELLINGS = {
    "exact": ([(H, "confidential")], None),
    "capitalised": ([(H, "Confidential")], None),
    "upper": ([(H, "CONFIDENTIAL")], None),
    "list-no-space": ([(H, "internal,confidential")], None),
    "list": ([(H, "confidential, internal")], None),
    "list-restricted": ([(H, "internal,Restricted")], None),
    "two-headers": ([(H, "public"), (H, "Confidential")], None),
    "header-name-case": ([("X-Data-Classification", "Confidential")], None),
    "metadata": ([], {"data_classification": "Confidential"}),
    "metadata-list": ([], {"data_classification": ["internal", "confidential"]}),
}
MODELS = ["auto", "gpt-4o", "local"]


@pytest.fixture(scope="module")
def stack():
    with (
        running_mock_openai(MockControl(models=["default"])) as (local, local_ctl),
        running_mock_openai(MockControl(models=["gpt-4o"], api_key="sk-test")) as (oai, oai_ctl),
    ):
        env = {
            "LOCAL_ENGINE_URL": local,
            "OPENAI_BASE_URL": oai,
            "OPENAI_API_KEY": "sk-test",
        }  # ANTHROPIC_API_KEY unset: that backend is off; openai is the proprietary fallback
        with running_gateway(ROOT / "policies" / "default.yaml", env) as (base, _):
            yield base, local_ctl, oai_ctl


def _post(base: str, model: str, headers, metadata, stream: bool = False) -> httpx.Response:
    body: dict = {"model": model, "messages": [{"role": "user", "content": "the merger terms"}]}
    if metadata is not None:
        body["metadata"] = metadata
    if stream:
        body["stream"] = True
    return httpx.post(base + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_positive_control_unmarked_requests_do_reach_the_proprietary_mock(stack):
    base, local_ctl, oai_ctl = stack
    n = len(oai_ctl.requests)
    r = _post(base, "gpt-4o", [(H, "public")], None)
    assert r.status_code == 200 and r.headers["x-gateway-backend"] == "openai"
    assert len(oai_ctl.requests) == n + 1


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_confidential_stays_home(stack, spelling, model):
    base, local_ctl, oai_ctl = stack
    headers, metadata = SPELLINGS[spelling]
    n_oai, n_local = len(oai_ctl.requests), len(local_ctl.requests)
    r = _post(base, model, headers, metadata)
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-backend"] == "local"
    assert len(oai_ctl.requests) == n_oai  # the proprietary mock saw nothing
    assert len(local_ctl.requests) == n_local + 1


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("spelling", ["capitalised", "list", "two-headers", "metadata-list"])
def test_confidential_stays_home_when_the_local_backend_fails(stack, spelling, model, stream):
    """Every local attempt fails (its retry included): the fallback to the proprietary backend
    that everyday traffic gets must not happen; the client gets an error instead."""
    base, local_ctl, oai_ctl = stack
    headers, metadata = SPELLINGS[spelling]
    n_oai = len(oai_ctl.requests)
    local_ctl.fail_next(10, status=503)
    try:
        r = _post(base, model, headers, metadata, stream=stream)
    finally:
        local_ctl.reset()
    assert r.status_code in (502, 503), r.text
    assert len(oai_ctl.requests) == n_oai


@pytest.mark.parametrize("spelling", ["upper", "list", "two-headers"])
def test_confidential_stays_home_when_the_local_connection_drops(stack, spelling):
    base, local_ctl, oai_ctl = stack
    headers, metadata = SPELLINGS[spelling]
    n_oai = len(oai_ctl.requests)
    local_ctl.drop_next(10)
    try:
        r = _post(base, "gpt-4o", headers, metadata)
    finally:
        local_ctl.reset()
    assert r.status_code in (502, 503) and len(oai_ctl.requests) == n_oai


def test_unmarked_request_does_fall_back_when_local_fails(stack):
    """The contrast to the test above: the same fault, no marking, reaches the proprietary mock."""
    base, local_ctl, oai_ctl = stack
    n_oai = len(oai_ctl.requests)
    local_ctl.fail_next(10, status=503)
    try:
        r = _post(base, "auto", [(H, "public")], None)
    finally:
        local_ctl.reset()
    assert r.status_code == 200 and r.headers["x-gateway-backend"] == "openai"
    assert len(oai_ctl.requests) == n_oai + 1


def test_refusals_are_counted(stack):
    base, *_ = stack
    text = httpx.get(base + "/metrics").text
    assert (
        'gateway_provenance_skips_total{backend="openai",rule="data:confidential-stays-home"}'
        in text
    )
