"""Client disconnects: mid-stream the upstream request is aborted, before the body is read
nothing reaches the upstream, and in every case nothing leaks (gateway tasks, upstream
connections) and the request is counted.

Real parts: the gateway on uvicorn, a slow loopback upstream that notices closed connections,
raw sockets as clients (so the test, not a library, decides when the connection goes away).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest
from aiohttp import web

from tests.gateway.gateway_server import running_gateway
from tests.gateway.qa_support import CLIENT_KEY, ENV, PATHS, metric_value, write_policy
from tests.support.mock_openai import running_mock_openai
from tests.support.servers import running

EVENT_INTERVAL_S = 0.05
STREAM_EVENTS = 200  # ~10 s if nobody stops it


class SlowUpstream:
    """Streams one chat chunk every EVENT_INTERVAL_S; records how each stream ended."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = 0
        self.aborted = 0  # the gateway closed the connection mid-stream
        self.finished = 0
        self.aborted_event = threading.Event()

    def app(self) -> web.Application:
        async def chat(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            with self.lock:
                self.started += 1
            if not body.get("stream"):
                for _ in range(
                    STREAM_EVENTS
                ):  # "generating"; aiohttp does not cancel handlers on close
                    await asyncio.sleep(EVENT_INTERVAL_S)
                    if request.transport is None or request.transport.is_closing():
                        with self.lock:
                            self.aborted += 1
                        return web.Response(status=499)
                return web.json_response(
                    {"id": "x", "object": "chat.completion", "model": "m", "choices": []}
                )
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "qwen-local",
                     "choices": [{"index": 0, "delta": {"content": "tick "}, "finish_reason": None}]}  # fmt: skip
            try:
                for _ in range(STREAM_EVENTS):
                    await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    await asyncio.sleep(EVENT_INTERVAL_S)
                await resp.write(b"data: [DONE]\n\n")
            except (ConnectionResetError, asyncio.CancelledError):
                with self.lock:
                    self.aborted += 1
                self.aborted_event.set()
                raise
            with self.lock:
                self.finished += 1
            return resp

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        return app


@pytest.fixture(scope="module")
def slow_gateway(tmp_path_factory):
    upstream = SlowUpstream()
    with running(upstream.app()) as slow_url, running_mock_openai() as (oai, _):
        policy = write_policy(
            tmp_path_factory.mktemp("disc") / "p.yaml", slow_url + "/v1", oai, cache=False
        )
        with running_gateway(policy, ENV) as (base, app):
            yield base, app, upstream


def _gateway_loop(app) -> asyncio.AbstractEventLoop:
    """The gateway's event loop (uvicorn runs it in a thread), via the live backend's session."""
    backend = app.store.runtime.backends["local"]
    loop = backend._loop  # noqa: SLF001 - test-only access to the loop the backend runs in
    assert loop is not None, "no request has gone through the backend yet"
    return loop


def task_count(app) -> int:
    async def count() -> int:
        return len(asyncio.all_tasks())

    return asyncio.run_coroutine_threadsafe(count(), _gateway_loop(app)).result(timeout=5)


def upstream_connections(app) -> int:
    """Connections the gateway holds open to the upstream (in use or pooled)."""
    connector = app.store.runtime.backends["local"]._session.connector  # noqa: SLF001

    async def count() -> int:
        acquired = len(connector._acquired)  # noqa: SLF001
        pooled = sum(len(v) for v in connector._conns.values())  # noqa: SLF001
        return acquired + pooled

    return asyncio.run_coroutine_threadsafe(count(), _gateway_loop(app)).result(timeout=5)


def _raw_request(
    base: str, path: str, body: bytes, content_length: int | None = None
) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {content_length if content_length is not None else len(body)}\r\n\r\n"
    )
    s.sendall(head.encode() + body)
    return s


def _read_until(s: socket.socket, marker: bytes, limit_s: float = 10) -> bytes:
    data = b""
    deadline = time.monotonic() + limit_s
    while marker not in data:
        assert time.monotonic() < deadline, data[-300:]
        chunk = s.recv(65536)
        assert chunk, data[-300:]
        data += chunk
    return data


def _wait_for(cond, limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _metrics(base: str) -> str:
    return httpx.get(base + "/metrics").text


def test_disconnect_mid_stream_aborts_the_upstream(slow_gateway):
    base, app, upstream = slow_gateway
    body = json.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": "go"}], "stream": True}
    ).encode()
    # one full warm-up stream cut short, so the loop, pool and metric children exist
    warm = _raw_request(base, PATHS["chat"], body)
    _read_until(warm, b"tick")
    warm.close()
    _wait_for(lambda: upstream.aborted == 1)
    tasks_before = task_count(app)
    disconnects_before = metric_value(
        _metrics(base), "gateway_errors_total", error_type="ClientDisconnected"
    )
    started_before = upstream.started
    for i in range(10):
        s = _raw_request(base, PATHS["chat"], body)
        _read_until(s, b"tick")
        t0 = time.monotonic()
        s.close()
        _wait_for(lambda i=i: upstream.aborted == 2 + i)
        # aborted promptly, not after the ~10 s the stream would take (margin for VM stalls of ~1.5 s)
        assert time.monotonic() - t0 < 5.0
    assert upstream.started == started_before + 10 and upstream.finished == 0
    _wait_for(lambda: task_count(app) <= tasks_before)
    _wait_for(
        lambda: upstream_connections(app) == 0
    )  # an aborted stream's connection is closed, not pooled
    text = _metrics(base)
    assert (
        metric_value(text, "gateway_errors_total", error_type="ClientDisconnected")
        == disconnects_before + 10
    )
    assert metric_value(text, "gateway_requests_total", status_class="4xx", backend="local") >= 10


def test_disconnect_before_the_body_is_read(slow_gateway):
    base, app, upstream = slow_gateway
    httpx.get(base + "/health")
    tasks_before = task_count(app) if app.store.runtime.backends["local"]._loop else None  # noqa: SLF001
    started = upstream.started
    before = metric_value(
        _metrics(base), "gateway_requests_total", backend="none", status_class="4xx"
    )
    for _ in range(10):
        s = _raw_request(
            base, PATHS["chat"], b'{"model": "auto", "mess', content_length=5000
        )  # promises 5000 bytes
        time.sleep(0.02)
        s.close()
    _wait_for(
        lambda: (
            metric_value(
                _metrics(base), "gateway_requests_total", backend="none", status_class="4xx"
            )
            == before + 10
        )
    )
    assert upstream.started == started  # nothing reached the upstream
    assert httpx.get(base + "/health").status_code == 200
    if tasks_before is not None:
        _wait_for(
            lambda: task_count(app) <= tasks_before
        )  # the half-read requests left no task behind


def test_client_that_lies_about_content_length(slow_gateway):
    """More bytes than Content-Length: the surplus is the next request on the connection (HTTP/1.1);
    fewer bytes then silence: the client's problem, and the gateway does not hang forever on a
    closed connection."""
    base, _, upstream = slow_gateway
    started = upstream.started
    s = _raw_request(
        base,
        PATHS["chat"],
        b'{"model": "auto", "messages": [{"role": "user", "content": "x"}]}' + b"GARBAGE",
        content_length=10,
    )
    data = _read_until(s, b"\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400"), data[:200]  # the first 10 bytes are not JSON
    s.close()
    assert upstream.started == started


def test_disconnect_while_waiting_for_a_whole_answer_aborts_the_upstream(slow_gateway):
    """A non-streamed request whose client gave up must not keep the upstream generating
    (on a GPU backend that is a batch slot held for nothing)."""
    base, app, upstream = slow_gateway
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "wait"}]}).encode()
    aborted, started = upstream.aborted, upstream.started
    s = _raw_request(base, PATHS["chat"], body)
    _wait_for(lambda: upstream.started == started + 1)
    t0 = time.monotonic()
    s.close()
    _wait_for(lambda: upstream.aborted == aborted + 1, limit_s=6.0)
    assert time.monotonic() - t0 < 5.0  # the answer would take ~10 s; margin for VM stalls
