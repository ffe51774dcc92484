"""HTTP edges a production client or load balancer hits: HEAD and OPTIONS, 405's Allow header,
/v1/models auth, huge header values, keys in query strings, Content-Length lies.

Real parts: the gateway on uvicorn, a loopback OpenAI-compatible mock, httpx and raw sockets.
"""

from __future__ import annotations

import logging
import socket

import httpx
import pytest

from tests.gateway.gateway_server import running_gateway
from tests.gateway.qa_support import (
    AUTH,
    CLIENT_KEY,
    ENV,
    PATHS,
    check_error_body,
    check_no_leak,
    valid_chat,
    write_policy,
)
from tests.support.mock_openai import running_mock_openai


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with running_mock_openai() as (local, local_ctl), running_mock_openai() as (oai, _):
        policy = write_policy(
            tmp_path_factory.mktemp("edges") / "p.yaml", local, oai, max_body=5000
        )
        with running_gateway(policy, ENV) as (base, _app):
            yield base, local_ctl


def test_head_on_get_endpoints_answers_like_get_without_a_body(gw):
    base, _ = gw
    for path, headers in (("/health", {}), ("/v1/models", AUTH), ("/metrics", {})):
        get = httpx.get(base + path, headers=headers)
        head = httpx.head(base + path, headers=headers)
        assert head.status_code == get.status_code == 200, (path, head.status_code)
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
    assert httpx.head(base + "/v1/models").status_code == 401  # HEAD is authenticated like GET


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", PATHS["chat"], "POST"),
        ("PUT", PATHS["embeddings"], "POST"),
        ("HEAD", PATHS["chat"], "POST"),
        ("DELETE", "/v1/models", "GET"),
        ("POST", "/health", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(gw, method, path, allow):
    r = httpx.request(method, gw[0] + path, headers=AUTH)
    assert r.status_code == 405
    assert r.headers["allow"] == allow
    if method != "HEAD":
        assert check_error_body(r)["code"] == "method_not_allowed"


def test_models_needs_a_key_when_keys_are_configured(gw):
    base, _ = gw
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic " + CLIENT_KEY},
    ):
        r = httpx.get(base + "/v1/models", headers=headers)
        assert r.status_code == 401 and check_error_body(r)["type"] == "authentication_error"
        r = httpx.get(base + "/v1/models/auto", headers=headers)
        assert r.status_code == 401
    assert {m["id"] for m in httpx.get(base + "/v1/models", headers=AUTH).json()["data"]} == {
        "auto"
    }
    assert httpx.get(base + "/v1/models", headers={"x-api-key": CLIENT_KEY}).status_code == 200


def test_very_long_header_values(gw):
    base, ctl = gw
    huge = "k" * 60_000
    r = httpx.post(
        base + PATHS["chat"], json=valid_chat(), headers={"Authorization": f"Bearer {huge}"}
    )
    assert r.status_code == 401 and huge not in r.text
    check_error_body(r)
    # a long request id is forwarded upstream as is; the answer is unaffected
    rid = "r" * 4000
    r = httpx.post(
        base + PATHS["chat"], json=valid_chat("long id"), headers={**AUTH, "x-request-id": rid}
    )
    assert r.status_code == 200 and ctl.requests[-1].headers["x-request-id"] == rid
    # latin-1 bytes in a header value do not break header parsing or routing
    r = httpx.post(
        base + PATHS["chat"],
        json=valid_chat("latin"),
        headers={**AUTH, "x-data-classification": b"conf\xeddential"},
    )
    assert r.status_code == 200 and r.headers["x-gateway-route-reason"] == "everyday"


def test_keys_in_query_strings_are_not_accepted_nor_logged(gw, caplog):
    base, _ = gw
    caplog.set_level(logging.DEBUG)
    r = httpx.post(
        base + PATHS["chat"] + f"?api_key={CLIENT_KEY}&key={CLIENT_KEY}", json=valid_chat()
    )
    assert r.status_code == 401  # only the Authorization / api-key headers carry keys
    check_no_leak(r.text)
    r = httpx.post(
        base + PATHS["chat"] + f"?api_key={CLIENT_KEY}", json=valid_chat("q"), headers=AUTH
    )
    assert r.status_code == 200
    gw[1].fail_next(1, status=500)  # makes the gateway log a warning about this request
    r = httpx.post(
        base + PATHS["chat"] + f"?api_key={CLIENT_KEY}", json=valid_chat("q"), headers=AUTH
    )
    assert r.status_code == 200 and r.headers["x-gateway-backend"] == "openai"
    r = httpx.get(base + f"/nope?api_key={CLIENT_KEY}")
    assert r.status_code == 404 and CLIENT_KEY not in r.text
    ours = [r for r in caplog.records if r.name.startswith("gateway")]  # not the test client's own
    assert ours and all(CLIENT_KEY not in r.getMessage() for r in ours)


def _raw(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_content_length_lies(gw):
    base, _ = gw
    auth = f"Authorization: Bearer {CLIENT_KEY}\r\n".encode()
    # declared larger than the limit: refused before reading a byte
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        + auth
        + b"Content-Length: 999999999\r\n\r\n"
    )
    assert _raw(base, head).startswith(b"HTTP/1.1 413")
    # not a number: the HTTP parser refuses it (400) before the app sees it
    bad = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: ten\r\n\r\n"
    )
    assert _raw(base, bad).startswith(b"HTTP/1.1 400")
    # chunked with more than the limit: cut off at the limit with 413
    body = b'{"model": "auto", "messages": [{"role": "user", "content": "' + b"a" * 6000 + b'"}]}'
    chunked = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        + auth
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunked += f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    assert _raw(base, chunked).startswith(b"HTTP/1.1 413")
