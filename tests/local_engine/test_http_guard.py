"""The connection guards both servers share (local_engine/http_guard.py).

Their behaviour (408 past the header deadline, 503 past the cap) is tested through each real
server: tests/local_engine/test_server_hardening.py and tests/gateway/test_cli_serve.py. Here:
that the gateway can take the module without the engine's heavy imports, and its surface.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import local_engine.http_guard as http_guard


def test_gateway_connections_import_neither_fastapi_nor_torch():
    probe = (
        "import sys, gateway.server.connections, local_engine.http_guard;"
        "print(sorted(m for m in ('fastapi', 'torch', 'local_engine.server') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_public_surface():
    assert set(http_guard.__all__) == {
        "BUSY_REPLY",
        "DEFAULT_HEADER_TIMEOUT_S",
        "DEFAULT_MAX_CONNECTIONS",
        "HEADER_TIMEOUT_REPLY",
        "GuardedHttpProtocol",
        "guarded_protocol",
    }
    assert all(hasattr(http_guard, n) for n in http_guard.__all__)


def test_guarded_protocol_carries_its_limits_and_leaves_the_base_alone():
    cls = http_guard.guarded_protocol(header_timeout_s=2.5, max_connections=7, name="P")
    assert issubclass(cls, http_guard.GuardedHttpProtocol) and cls.__name__ == "P"
    assert (cls.header_timeout_s, cls.max_connections) == (2.5, 7)
    base = http_guard.GuardedHttpProtocol
    assert (base.header_timeout_s, base.max_connections) == (
        http_guard.DEFAULT_HEADER_TIMEOUT_S,
        http_guard.DEFAULT_MAX_CONNECTIONS,
    )


@pytest.mark.parametrize(
    ("timeout", "cap", "message"),
    [(0.0, 4, "header_timeout_s"), (-1.0, 4, "header_timeout_s"), (1.0, 0, "max_connections")],
)
def test_guarded_protocol_rejects_bad_limits(timeout, cap, message):
    with pytest.raises(ValueError, match=message):
        http_guard.guarded_protocol(header_timeout_s=timeout, max_connections=cap)


def test_replies_are_whole_http_responses_with_an_openai_error():
    for reply, status, code in [
        (http_guard.HEADER_TIMEOUT_REPLY, 408, "request_timeout"),
        (http_guard.BUSY_REPLY, 503, "too_many_connections"),
    ]:
        head, body = reply.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 %d " % status)
        assert b"connection: close" in head and b"content-length: %d" % len(body) in head
        assert json.loads(body)["error"]["code"] == code
