"""The last-resort handler: an unexpected exception is answered as far as the response allows,
and never starts a second response. Plain ASGI messages, collected as a server would send them.
"""

from __future__ import annotations

import httpx
import orjson
import pytest

from gateway.errors import UpstreamError
from gateway.server.guard import ResponseAlreadyStarted, ResponseGuard
from gateway.server.http import send_bytes, send_chunk, start_sse
from tests.gateway.gateway_server import running_gateway
from tests.gateway.qa_support import AUTH, ENV, PATHS, metric_value, valid_chat, write_policy
from tests.support.mock_openai import running_mock_openai
from tests.support.servers import running


class Sent:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def __call__(self, message) -> None:
        self.messages.append(dict(message))

    def body(self) -> bytes:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )


async def test_nothing_sent_yet_becomes_a_500_in_openai_shape():
    sent = Sent()
    guard = ResponseGuard(sent)
    await guard.fail()
    start = sent.messages[0]
    assert start["status"] == 500
    err = orjson.loads(sent.body())["error"]
    assert err["code"] == "internal_error" and err["type"] == "api_error"
    assert "Traceback" not in err["message"] and guard.finished


async def test_after_sse_headers_an_error_event_and_a_closed_stream():
    sent = Sent()
    guard = ResponseGuard(sent)
    await start_sse(guard.send)
    await send_chunk(guard.send, b'data: {"choices":[]}\n\n')
    await guard.fail(UpstreamError("backend 'x' failed"))
    assert [m["type"] for m in sent.messages].count("http.response.start") == 1
    body = sent.body()
    assert body.endswith(b"data: [DONE]\n\n")
    assert b'"message":"backend \'x\' failed"' in body
    assert sent.messages[-1]["more_body"] is False


async def test_a_second_start_is_refused_and_a_finished_response_left_alone():
    sent = Sent()
    guard = ResponseGuard(sent)
    await send_bytes(guard.send, 200, b"{}")
    with pytest.raises(ResponseAlreadyStarted):
        await send_bytes(guard.send, 500, b"{}")
    n = len(sent.messages)
    await guard.fail()
    assert len(sent.messages) == n  # complete: nothing more to say


async def test_a_started_plain_response_is_ended_where_it_was():
    sent = Sent()
    guard = ResponseGuard(sent)
    await guard.send({"type": "http.response.start", "status": 200, "headers": []})
    await guard.send({"type": "http.response.body", "body": b"{", "more_body": True})
    await guard.fail()
    assert sent.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


# ---------------------------------------------------------------- through the gateway


def _garbage_usage_app():
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
                "usage": {"prompt_tokens": "many", "completion_tokens": 1e300},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


def test_garbage_usage_from_an_upstream_is_not_a_crash(tmp_path):
    """Non-numeric token counts made int() raise inside the pipeline: a bare 500, uncounted."""
    with running(_garbage_usage_app()) as up, running_mock_openai() as (oai, _):
        policy = write_policy(tmp_path / "p.yaml", up + "/v1", oai, cache=False)
        with running_gateway(policy, ENV) as (base, _app):
            before = httpx.get(base + "/metrics").text
            r = httpx.post(base + PATHS["chat"], json=valid_chat(), headers=AUTH, timeout=30)
            assert r.status_code == 200, r.text
            after = httpx.get(base + "/metrics").text
    counted = metric_value(after, "gateway_requests_total", status_class="2xx") - metric_value(
        before, "gateway_requests_total", status_class="2xx"
    )
    assert counted == 1
