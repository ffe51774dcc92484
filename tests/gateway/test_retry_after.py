"""Retry-After from an upstream is parsed defensively and bounded, both where the gateway
honours it (retry or fall back) and where it tells the client (its own Retry-After).

A probe sent ``Retry-After: inf`` and ``1e400``: the gateway answered a plain-text 500 with an
OverflowError, and the request was missing from the metrics. Real parts: the gateway on
uvicorn, loopback OpenAI-compatible mocks, httpx.
"""

from __future__ import annotations

import math
import time
from email.utils import formatdate

import httpx
import pytest

from gateway.backends.upstream_errors import MAX_RETRY_AFTER_S, parse_retry_after
from gateway.server.http import MAX_CLIENT_RETRY_AFTER_S, retry_after_header
from tests.gateway.gateway_server import running_gateway
from tests.gateway.qa_support import (
    AUTH,
    ENV,
    PATHS,
    check_error_body,
    metric_value,
    valid_chat,
    write_policy,
)
from tests.support.mock_openai import running_mock_openai


@pytest.mark.parametrize(
    "value",
    ["inf", "Infinity", "-inf", "nan", "NaN", "1e400", "1e3", "-5", "1_0", "0x10", "", " ", "soon"],
)
def test_unreadable_retry_after_is_ignored(value):
    assert parse_retry_after({"retry-after": value}) is None
    assert parse_retry_after({"retry-after-ms": value}) is None


@pytest.mark.parametrize(
    ("headers", "want"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": " 2.5 "}, 2.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "inf", "retry-after": "3"}, 3.0),  # unreadable ms: the header after
        ({"retry-after": "999999999999"}, MAX_RETRY_AFTER_S),
        ({"retry-after-ms": "999999999999"}, MAX_RETRY_AFTER_S),
    ],
)
def test_retry_after_is_bounded(headers, want):
    assert parse_retry_after(headers) == want


def test_retry_after_dates_past_future_and_beyond_the_calendar():
    now = time.time()
    soon = parse_retry_after({"retry-after": formatdate(now + 30, usegmt=True)}, now=now)
    assert soon is not None and 29 <= soon <= 31
    assert parse_retry_after({"retry-after": formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    far = parse_retry_after({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, now=now)
    assert far == MAX_RETRY_AFTER_S
    for bad in ("Mon, 99 Foo 99999999999 99:99:99 GMT", "Fri, 31 Dec 99999 23:59:59 GMT"):
        assert parse_retry_after({"retry-after": bad}, now=now) is None


@pytest.mark.parametrize(
    ("seconds", "want"),
    [(0.0, b"1"), (0.2, b"1"), (1.0, b"1"), (1.01, b"2"), (59.5, b"60"), (1e9, b"60")],
)
def test_client_retry_after_header_is_whole_seconds_within_bounds(seconds, want):
    assert retry_after_header(seconds) == want


@pytest.mark.parametrize("seconds", [math.inf, math.nan, 1e308 * 10])
def test_client_retry_after_header_survives_non_finite_values(seconds):
    assert retry_after_header(seconds) == str(MAX_CLIENT_RETRY_AFTER_S).encode()


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with running_mock_openai() as (local, local_ctl), running_mock_openai() as (oai, oai_ctl):
        # 2 attempts: a Retry-After short enough is honoured as a wait on the same backend
        policy = write_policy(
            tmp_path_factory.mktemp("retry-after") / "p.yaml", local, oai, attempts=2
        )
        with running_gateway(policy, ENV) as (base, _app):
            yield base, local_ctl, oai_ctl


# huge: longer than retry.max_retry_after_s, so one call per backend and a bounded wait passed
# on; unreadable (not delta-seconds nor a date): ignored, so the backend's second attempt comes
# after the usual backoff and no wait is passed on
@pytest.mark.parametrize(
    ("value", "calls"),
    [("99999999999", 1), ("86400", 1), ("inf", 2), ("1e400", 2), ("nan", 2), ("-1", 2)],
)
def test_huge_or_broken_retry_after_everywhere_is_a_bounded_429(gw, value, calls):
    base, local_ctl, oai_ctl = gw
    before = httpx.get(base + "/metrics").text
    local_ctl.fail_next(calls, 429, retry_after=value)
    oai_ctl.fail_next(calls, 429, retry_after=value)
    r = httpx.post(base + PATHS["chat"], json=valid_chat("rate limited"), headers=AUTH, timeout=30)
    assert r.status_code == 429, r.text
    check_error_body(r)
    header = r.headers.get("retry-after")
    if calls == 2:
        assert header is None
    else:
        assert header == str(MAX_CLIENT_RETRY_AFTER_S)
    after = httpx.get(base + "/metrics").text
    counted = metric_value(after, "gateway_requests_total", status_class="4xx") - metric_value(
        before, "gateway_requests_total", status_class="4xx"
    )
    assert counted == 1
    assert local_ctl.take_fault() is None and oai_ctl.take_fault() is None  # each call was made


def test_long_retry_after_falls_back_instead_of_waiting(gw):
    """An honoured wait is bounded by retry.max_retry_after_s: longer means fall back now."""
    base, local_ctl, oai_ctl = gw
    local_ctl.fail_next(1, 429, retry_after="99999999999")
    t = time.monotonic()
    r = httpx.post(base + PATHS["chat"], json=valid_chat("fall back"), headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-backend"] == "openai"
    assert time.monotonic() - t < 20  # loose: the contrast is waiting "for ever"
