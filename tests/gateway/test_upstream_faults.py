"""Upstream faults seen through the gateway: what is retried, what falls back, what counts.

- A read timeout on a non-streamed generation was retried on the same backend (the request
  may still be running there): now it falls back at once; a connect timeout is retried.
- Non-JSON ``data:`` lines in an upstream stream were relayed and counted as success: now they
  end the stream with an error event and count as an upstream failure.

Real parts: the gateway on uvicorn, loopback aiohttp upstreams, httpx.
"""

from __future__ import annotations

import json
import logging
import socket

import httpx
import pytest
from aiohttp import web

from tests.gateway.gateway_server import running_gateway
from tests.gateway.qa_support import AUTH, ENV, PATHS, metric_value, valid_chat, write_policy
from tests.support.mock_openai import running_mock_openai
from tests.support.servers import running

GOOD = b'data: {"id":"x","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}\n\n'
STREAMS = {
    "garbage_mid": [GOOD, b"data: <html>502 Bad Gateway</html>\n\n", b"data: [DONE]\n\n"],
    "garbage_first": [b"data: not json\n\n", b"data: [DONE]\n\n"],
    "odd_shape": [
        b'data: {"id":"y","object":"chat.completion.chunk","model":"m","choices":"abc"}\n\n',
        b'data: {"id":"y","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":[1]}]}\n\n',
        b"data: [DONE]\n\n",
    ],
}


def _sse_app(seen: list[str]) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        script = STREAMS[request.headers["x-request-id"]]  # the one header the gateway forwards
        seen.append(request.headers["x-request-id"])
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for part in script:
            await resp.write(part)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    seen: list[str] = []
    with running(_sse_app(seen)) as sse, running_mock_openai() as (oai, oai_ctl):
        policy = write_policy(
            tmp_path_factory.mktemp("faults") / "p.yaml", sse + "/v1", oai, attempts=2
        )
        with running_gateway(policy, ENV) as (base, _app):
            yield base, seen, oai_ctl


def _stream(base: str, script: str) -> tuple[int, list[bytes]]:
    body = valid_chat(f"stream {script}") | {"stream": True, "temperature": 0}  # cacheable
    headers = {**AUTH, "x-request-id": script}
    with httpx.stream("POST", base + PATHS["chat"], json=body, headers=headers, timeout=30) as r:
        return r.status_code, [line for line in r.iter_lines() if line]


def test_non_json_data_mid_stream_is_an_upstream_error(gw):
    base, seen, _ = gw
    before = httpx.get(base + "/metrics").text
    status, lines = _stream(base, "garbage_mid")
    assert status == 200  # headers were out already
    assert b"<html>" not in "\n".join(lines).encode()  # never relayed
    err = json.loads(lines[-2].removeprefix("data: "))
    assert "malformed stream event" in err["error"]["message"]
    assert lines[-1] == "data: [DONE]"
    after = httpx.get(base + "/metrics").text

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("gateway_stream_errors_total", backend="local") == 1
    assert delta("gateway_requests_total", status_class="5xx") == 1
    assert delta("gateway_requests_total", status_class="2xx") == 0


def test_non_json_first_event_falls_back_before_the_first_byte(gw):
    base, seen, oai_ctl = gw
    n = len(oai_ctl.requests)
    status, lines = _stream(base, "garbage_first")
    assert status == 200 and lines[-1] == "data: [DONE]"
    assert "not json" not in "\n".join(lines)
    assert len(oai_ctl.requests) == n + 1  # the fallback answered


def test_read_timeout_falls_back_instead_of_retrying_the_same_backend(tmp_path):
    with running_mock_openai() as (local, local_ctl), running_mock_openai() as (oai, oai_ctl):
        policy = write_policy(tmp_path / "p.yaml", local, oai, attempts=2)  # timeout_s: 5
        with running_gateway(policy, ENV) as (base, _app):
            local_ctl.delay_next(8.0)  # past the backend's 5 s read timeout
            r = httpx.post(base + PATHS["chat"], json=valid_chat("slow"), headers=AUTH, timeout=30)
            assert r.status_code == 200, r.text
            assert r.headers["x-gateway-backend"] == "openai"
            assert len(local_ctl.requests) == 1  # sent once, not again after the timeout
            assert len(oai_ctl.requests) == 1


def test_unreachable_upstreams_leave_no_host_or_library_names_in_the_answer(tmp_path, caplog):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        dead = f"http://127.0.0.1:{port}/v1"
        policy = write_policy(tmp_path / "p.yaml", dead, dead)
        with running_gateway(policy, ENV) as (base, _app):
            with caplog.at_level(logging.WARNING, logger="gateway"):
                r = httpx.post(base + PATHS["chat"], json=valid_chat(), headers=AUTH, timeout=30)
    assert r.status_code in (502, 503), r.text
    for internal in ("127.0.0.1", str(port), "ClientConnectorError", "Cannot connect", "aiohttp"):
        assert internal not in r.text, internal
    assert "unreachable" in r.json()["error"]["message"]
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert f"127.0.0.1:{port}" in logged  # the operator still sees where and why


def test_chunks_of_an_odd_shape_are_relayed_not_cached_and_not_a_crash(gw):
    """With the cache on, the stream assembler read each chunk; "choices": "abc" made it raise
    AttributeError inside the relay, cutting a stream the client could have read."""
    base, seen, _ = gw
    before = httpx.get(base + "/metrics").text
    for _ in range(2):  # the second would be a cache hit had the first been stored
        status, lines = _stream(base, "odd_shape")
        assert status == 200 and lines[-1] == "data: [DONE]"
        assert '"choices":"abc"' in lines[0] and "error" not in "".join(lines)
    after = httpx.get(base + "/metrics").text
    assert (
        metric_value(after, "gateway_requests_total", status_class="2xx")
        - metric_value(before, "gateway_requests_total", status_class="2xx")
        == 2
    )
    assert seen.count("odd_shape") == 2  # nothing was served from the cache
