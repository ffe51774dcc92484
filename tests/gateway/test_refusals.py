"""Requests that no retry can help: the client is told so, in the way its SDK understands.

A probe found ``max_tokens`` 2**31-1 (and a 1 MB message) answered 503, which the OpenAI SDK
retried three times; it is a 400 ``context_length_exceeded``. A 503 that nothing configured
can ever serve carries ``x-should-retry: false``, which the SDK obeys before its status rules.
Real parts: the gateway on uvicorn, loopback mocks, the official ``openai`` SDK with its
default retries, its HTTP attempts counted by an httpx event hook.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.gateway.gateway_server import running_gateway
from tests.gateway.qa_support import CLIENT_KEY, ENV, write_policy
from tests.support.mock_openai import running_mock_openai

CONFIDENTIAL = {"x-data-classification": "confidential"}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with running_mock_openai() as (local, local_ctl), running_mock_openai() as (oai, oai_ctl):
        policy = write_policy(
            tmp_path_factory.mktemp("refusals") / "p.yaml", local, oai, max_body=4_000_000
        )
        with running_gateway(policy, ENV) as (base, _app):
            yield base, (local_ctl, oai_ctl)


@pytest.fixture()
def sdk(gw):
    base, _ = gw
    attempts: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda req: attempts.append(req.url.path)]})
    client = openai.OpenAI(
        base_url=base + "/v1", api_key=CLIENT_KEY, max_retries=2, http_client=http, timeout=30
    )
    yield client, attempts
    http.close()


def _upstream_calls(gw) -> int:
    _, ctls = gw
    return sum(len(c.requests) for c in ctls)


@pytest.mark.parametrize(
    "kw",
    [
        {"max_tokens": 2**31 - 1, "messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "word " * 200_000}]},  # ~1 MB, ~200k tokens
    ],
    ids=["max_tokens", "1MB_message"],
)
def test_never_fits_is_a_400_context_length_exceeded_not_retried(gw, sdk, kw):
    client, attempts = sdk
    before = _upstream_calls(gw)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="auto", **kw)
    assert e.value.status_code == 400
    assert e.value.code == "context_length_exceeded"
    assert attempts == ["/v1/chat/completions"]  # once: the SDK does not retry a 400
    assert _upstream_calls(gw) == before


def test_permanent_503_tells_the_sdk_not_to_retry(gw, sdk):
    """Confidential + an image: no self-hosted backend has vision, whatever happens next."""
    client, attempts = sdk
    before = _upstream_calls(gw)
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": [{"type": "text", "text": "look"}, IMAGE]}],
            extra_headers=CONFIDENTIAL,
            metadata={"tier": "gold"},
        )
    assert e.value.status_code == 503
    assert e.value.response.headers["x-should-retry"] == "false"
    assert attempts == ["/v1/chat/completions"]  # not 3
    assert _upstream_calls(gw) == before  # and nothing left the house
