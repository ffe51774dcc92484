"""200 concurrent requests (loopback only), streamed and not, some cached, with upstream faults
injected: every answer is well-formed and the metrics count exactly the requests sent.

Real parts: the gateway on uvicorn, two loopback OpenAI-compatible mocks (the self-hosted one
failing now and then), httpx's async client.
"""

from __future__ import annotations

import asyncio
import json
import random

import httpx

from tests.gateway.gateway_server import running_gateway
from tests.gateway.qa_support import (
    AUTH,
    ENV,
    OPENAI_KEY,
    PATHS,
    check_error_body,
    check_no_leak,
    metric_value,
    write_policy,
)
from tests.support.mock_openai import running_mock_openai
from tests.support.servers import MockControl

N = 200
SEED = 20240601


def _request(i: int, rng: random.Random) -> tuple[str, dict, str | None]:
    """(path, body, expected text or None when the content is not checked)."""
    stream = i % 2 == 0
    if i % 10 == 3:
        return PATHS["embeddings"], {"model": "auto", "input": f"embed {i}"}, None
    if i % 10 == 7:
        return (
            PATHS["completions"],
            {"model": "auto", "prompt": f"complete {i}", "stream": stream},
            f"echo: complete {i}",
        )
    text = (
        "shared cached question" if i % 10 == 5 else f"question {i} " + "x" * rng.randrange(0, 200)
    )
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], "stream": stream}
    if i % 10 == 5:
        body["temperature"] = 0
    if stream and i % 4 == 0:
        body["stream_options"] = {"include_usage": True}
    return PATHS["chat"], body, f"echo: {text}"


def _sse_text(raw: str) -> tuple[str, bool]:
    """(concatenated content, ended with an error event)."""
    assert raw.endswith("data: [DONE]\n\n"), raw[-300:]
    text, errored = "", False
    for event in raw.split("\n\n"):
        if not event or event == "data: [DONE]":
            continue
        assert event.startswith("data: "), event
        obj = json.loads(event[6:])
        if "error" in obj:
            errored = True
            continue
        for choice in obj.get("choices", []):
            text += (choice.get("delta") or {}).get("content") or choice.get("text") or ""
    return text, errored


async def _one(client: httpx.AsyncClient, i: int, rng: random.Random) -> str:
    path, body, expected = _request(i, rng)
    r = await client.post(path, json=body, headers=AUTH)
    check_no_leak(r.text)
    if r.status_code != 200:
        assert r.status_code in (502, 503, 504), (r.status_code, r.text)
        check_error_body(r)
        return "error"
    assert r.headers["x-gateway-backend"] in ("local", "openai", "embed")
    if r.headers["content-type"].startswith("text/event-stream"):
        text, errored = _sse_text(r.text)
        if errored:
            return "stream_error"
        assert text == expected, (text, expected)
        return "ok"
    obj = r.json()
    if path == PATHS["embeddings"]:
        assert len(obj["data"]) == 1 and obj["data"][0]["embedding"]
    elif path == PATHS["chat"]:
        assert obj["choices"][0]["message"]["content"] == expected
    else:
        assert obj["choices"][0]["text"] == expected
    return "ok"


def test_200_concurrent_mixed_requests_with_faults(tmp_path):
    rng = random.Random(SEED)
    local_ctl = MockControl(models=["qwen-local", "embed-local"])
    with (
        running_mock_openai(local_ctl) as (local, _),
        running_mock_openai(MockControl(api_key=OPENAI_KEY)) as (oai, oai_ctl),
    ):
        # the self-hosted side fails often: 5xx (retried, then falls back), dropped connections,
        # streams broken after their first events (in-band error); the fallback fails sometimes too
        policy = write_policy(tmp_path / "p.yaml", local, oai, attempts=2)
        for k in range(40):
            [lambda: local_ctl.fail_next(1, status=503), lambda: local_ctl.drop_next(1),
             lambda: local_ctl.break_stream_next(after_events=2), lambda: local_ctl.delay_next(0.05)][k % 4]()  # fmt: skip
        oai_ctl.fail_next(5, status=500)
        with running_gateway(policy, ENV) as (base, _app):
            before = httpx.get(base + "/metrics").text

            async def main() -> list[str]:
                limits = httpx.Limits(max_connections=N, max_keepalive_connections=N)
                async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
                    return await asyncio.gather(*(_one(client, i, rng) for i in range(N)))

            outcomes = asyncio.run(main())
            after = httpx.get(base + "/metrics").text
            assert httpx.get(base + "/health").status_code == 200
    assert len(outcomes) == N
    assert outcomes.count("ok") >= N * 0.8, {o: outcomes.count(o) for o in set(outcomes)}
    # every request is counted exactly once, whatever became of it
    sent = metric_value(after, "gateway_requests_total") - metric_value(
        before, "gateway_requests_total"
    )
    assert sent == N

    def counted(cls: str) -> float:
        return metric_value(after, "gateway_requests_total", status_class=cls) - metric_value(
            before, "gateway_requests_total", status_class=cls
        )

    assert counted("2xx") == outcomes.count("ok")
    # a stream that broke after its first byte is the upstream's failure: 5xx, not a client's 4xx
    assert counted("5xx") == outcomes.count("error") + outcomes.count("stream_error")
    assert counted("4xx") == 0
    stream_errors = metric_value(after, "gateway_stream_errors_total") - metric_value(
        before, "gateway_stream_errors_total"
    )
    assert stream_errors == outcomes.count("stream_error")
    assert metric_value(after, "gateway_retries_total") > 0
