"""gateway.backends.timeouts: a backend's own limits built once, a request's own applied."""

from __future__ import annotations

from gateway.backends.timeouts import UpstreamTimeouts
from gateway.config.schema import parse_backend


def test_the_backends_limits_are_built_once_and_a_requests_own_applies():
    cfg = parse_backend(
        {
            "kind": "openai_compatible",
            "model": "m",
            "base_url": "http://127.0.0.1:9/v1",
            "timeout_s": 30,
            "connect_timeout_s": 2,
        }
    )
    t = UpstreamTimeouts(cfg)
    whole, stream = t.get(None, stream=False), t.get(None, stream=True)
    assert (whole.total, whole.connect, whole.sock_read) == (30, 2, None)
    assert (stream.total, stream.connect, stream.sock_read) == (None, 2, 30)  # between chunks
    assert t.get(None, stream=False) is whole and t.get(0, stream=True) is stream  # no new ones
    own, own_stream = t.get(0.5, stream=False), t.get(0.5, stream=True)
    assert (own.total, own.connect) == (0.5, 2)
    assert (own_stream.total, own_stream.connect, own_stream.sock_read) == (None, 2, 0.5)
