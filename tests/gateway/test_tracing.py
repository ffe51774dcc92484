"""OpenTelemetry traces against a loopback OTLP/HTTP receiver that decodes the protobuf it gets:
one SERVER span per request with the GenAI attributes, a CLIENT span per upstream attempt
(a retry included), the client's trace continued and traceparent passed to the upstream."""

from __future__ import annotations

import gzip
import threading
import time
import uuid

import httpx
import pytest
from aiohttp import web
from gateway_server import running_gateway
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.mock_openai import running_mock_openai
from tests.support.policy import local_backend, policy_yaml
from tests.support.servers import MockControl, running


def _policy(otlp: str, local: str, ns: str) -> str:
    # two attempts, so a failed first one and its retry are two CLIENT spans
    retry = {"max_attempts": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.01}
    pricing = {"input_usd_per_mtok": 1, "output_usd_per_mtok": 2}
    return policy_yaml(
        tracing={"otlp_endpoint": f"{otlp}/v1/traces", "service_name": "gw-test"},
        cache={"enabled": False, "namespace": ns},
        backends={"local": local_backend(local, model="m", pricing=pricing, retry=retry)},
        models={"auto": {"route": "local"}},
    )


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class Receiver:
    def __init__(self) -> None:
        self.spans: list = []
        self.lock = threading.Lock()

    def app(self) -> web.Application:
        async def traces(request: web.Request) -> web.Response:
            raw = await request.read()
            if request.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            msg = ExportTraceServiceRequest()
            msg.ParseFromString(raw)
            with self.lock:
                for rs in msg.resource_spans:
                    service = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            self.spans.append((service, s))
            return web.Response(body=b"", content_type="application/x-protobuf")

        app = web.Application()
        app.router.add_post("/v1/traces", traces)
        return app

    def wait(self, n: int, timeout: float = 15.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.spans) >= n:
                    return list(self.spans)
            time.sleep(0.05)
        return list(self.spans)


def attrs(span) -> dict:
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = (
            v.string_value
            if v.HasField("string_value")
            else v.int_value
            if v.HasField("int_value")
            else v.double_value
            if v.HasField("double_value")
            else v.bool_value
        )
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    rec = Receiver()
    with (
        running(rec.app()) as otlp,
        running_mock_openai(MockControl(models=["m"])) as (local, local_ctl),
    ):
        policy = tmp_path_factory.mktemp("t") / "p.yaml"
        policy.write_text(_policy(otlp, local, uuid.uuid4().hex))
        with running_gateway(policy, {}) as (base, _):
            yield base, rec, local_ctl


def test_request_span_with_attempt_children_and_propagation(stack):
    base, rec, local_ctl = stack
    local_ctl.fail_next(1, status=503)  # the first attempt fails; the retry answers
    r = httpx.post(
        base + "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "trace me please"}]},
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"},
        timeout=30,
    )
    assert r.status_code == 200
    spans = rec.wait(3)
    mine = [(svc, s) for svc, s in spans if s.trace_id.hex() == TRACE_ID]
    assert len(mine) == 3
    assert all(svc["service.name"] == "gw-test" for svc, _ in mine)
    server = [s for _, s in mine if s.kind == s.SPAN_KIND_SERVER]
    attempts = [s for _, s in mine if s.kind == s.SPAN_KIND_CLIENT]
    assert len(server) == 1 and len(attempts) == 2
    root = server[0]
    assert root.name == "chat auto" and root.parent_span_id.hex() == PARENT
    a = attrs(root)
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "auto"
    assert a["gen_ai.response.model"] == "m" and a["gen_ai.provider.name"] == "self_hosted"
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["gateway.route.rule"] == "default" and a["gateway.backend"] == "local"
    assert a["gateway.cache"] == "bypass" and a["gateway.cost_usd"] > 0
    assert a["http.response.status_code"] == 200
    assert a["gateway.request_id"] == r.headers["x-gateway-request-id"]
    assert all(s.parent_span_id == root.span_id for s in attempts)
    failed = [s for s in attempts if attrs(s).get("error.type")]
    assert len(failed) == 1 and attrs(failed[0])["gateway.backend"] == "local"
    # each upstream attempt carried its own span as traceparent, in the client's trace
    sent = [q.headers.get("traceparent") for q in local_ctl.requests[-2:]]
    assert sent == [f"00-{TRACE_ID}-{s.span_id.hex()}-01" for s in attempts] or sent == [
        f"00-{TRACE_ID}-{s.span_id.hex()}-01" for s in reversed(attempts)
    ]


def test_tracing_is_off_without_an_endpoint():
    from gateway.config.schema import TracingConfig
    from gateway.tracing import build_tracing

    assert build_tracing(TracingConfig()) is None
