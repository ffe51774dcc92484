"""Property-based fuzzing of the engine's HTTP endpoints (issue #8): hostile bodies never give a
5xx, a hang or a traceback; every error is OpenAI's JSON; the engine stays healthy and serving.

Real parts: the tiny random checkpoint on the real engine, uvicorn on loopback (set up as
``local-engine serve`` sets it up), httpx as the client. The context is kept short so that the
valid requests the fuzzer reaches generate only a few tokens.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_harness import running_server, tiny_server_config

from local_engine.demo_model import build_tiny_checkpoint
from local_engine.server.limits import ServerLimits

MODEL = "tiny-demo"
MAX_BODY = 64 * 1024
ALLOWED = {200, 400, 404, 405, 413}
FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    model_dir = build_tiny_checkpoint(tmp_path_factory.mktemp("fuzz") / "model", arch="qwen2")
    config = tiny_server_config(model_dir, max_model_len=48, served_model_name=MODEL)
    with running_server(config, ServerLimits(max_body_bytes=MAX_BODY)) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client


# ---------------------------------------------------------------- strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # past int64/uint64
    st.floats(allow_nan=False, allow_infinity=False),  # NaN / Infinity literals: see `mangle`
    st.text(max_size=16),  # every plane, lone surrogates included (as \\ud800 escapes)
)
garbage = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def maybe(valid: st.SearchStrategy, weight: int = 3) -> st.SearchStrategy:
    """Mostly a plausible value (so later checks are reached), sometimes anything at all."""
    return st.sampled_from([True] * weight + [False]).flatmap(lambda ok: valid if ok else garbage)


small_int = st.one_of(st.integers(-2, 8), st.integers(-(2**64), 2**64))
unit = st.one_of(st.floats(-0.5, 2.5), st.integers(-1, 3), st.floats(-1e300, 1e300))
tool_call = st.fixed_dictionaries(
    {"id": maybe(st.text(max_size=6)), "type": maybe(st.just("function"))},
    optional={
        "function": maybe(
            st.fixed_dictionaries(
                {"name": maybe(st.text(max_size=6)), "arguments": maybe(st.text(max_size=20))}
            )
        )
    },
)
part = st.fixed_dictionaries(
    {"type": maybe(st.sampled_from(["text", "text", "image_url"]))},
    optional={"text": maybe(st.text(max_size=30))},
)
message = st.fixed_dictionaries(
    {"role": maybe(st.sampled_from(["system", "developer", "user", "assistant", "tool"]), 8)},
    optional={
        "content": maybe(st.one_of(st.text(max_size=40), st.lists(part, max_size=3)), 6),
        "tool_calls": maybe(st.lists(tool_call, max_size=2)),
        "tool_call_id": maybe(st.text(max_size=6)),
        "name": maybe(st.text(max_size=6)),
        "reasoning_content": garbage,
    },
)
sampling = {
    "max_tokens": maybe(st.integers(-1, 6), 6),
    "temperature": maybe(unit),
    "top_p": maybe(unit),
    "top_k": maybe(small_int),
    "min_p": maybe(unit),
    "seed": maybe(st.integers(-(2**70), 2**70)),
    "presence_penalty": maybe(unit),
    "frequency_penalty": maybe(unit),
    "repetition_penalty": maybe(unit),
    "n": maybe(st.integers(0, 2), 6),
    "stream": maybe(st.booleans(), 6),
    "stream_options": maybe(st.fixed_dictionaries({"include_usage": st.booleans()})),
    "stop": maybe(st.one_of(st.text(max_size=4), st.lists(st.text(max_size=4), max_size=20))),
    "stop_token_ids": maybe(st.lists(small_int, max_size=3)),
    "ignore_eos": maybe(st.booleans()),
    "logit_bias": maybe(
        st.dictionaries(
            st.one_of(st.integers(-5, 600).map(str), st.text(max_size=4)), unit, max_size=3
        )
    ),
    "user": garbage,
}
chat_body = st.fixed_dictionaries(
    {
        "model": maybe(st.sampled_from([MODEL, "default", "other"]), 8),
        "messages": maybe(st.lists(message, min_size=0, max_size=3), 8),
    },
    optional={
        **sampling,
        "logprobs": maybe(st.booleans()),
        "top_logprobs": maybe(small_int),
        "max_completion_tokens": maybe(st.integers(-1, 6)),
        "tools": maybe(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "type": st.just("function"),
                        "function": maybe(
                            st.fixed_dictionaries(
                                {"name": st.text(max_size=6)}, optional={"parameters": garbage}
                            )
                        ),
                    }
                ),
                max_size=2,
            )
        ),  # fmt: skip
        "tool_choice": maybe(st.sampled_from(["auto", "none", "required"])),
        "response_format": maybe(st.fixed_dictionaries({"type": st.sampled_from(["text", "x"])})),
        "chat_template_kwargs": maybe(st.dictionaries(st.text(max_size=6), garbage, max_size=2)),
        "add_generation_prompt": maybe(st.booleans()),
    },
)
completion_body = st.fixed_dictionaries(
    {
        "model": maybe(st.sampled_from([MODEL, "default", "other"]), 8),
        "prompt": maybe(
            st.one_of(
                st.text(max_size=40),
                st.lists(st.integers(-3, 600), max_size=6),
                st.lists(st.text(max_size=8), max_size=2),
                st.lists(st.lists(st.integers(-3, 600), max_size=4), max_size=2),
            ),
            8,
        ),
    },
    optional={
        **sampling,
        "logprobs": maybe(small_int),
        "echo": maybe(st.booleans()),
        "suffix": maybe(st.text(max_size=4)),
    },
)

# A valid request with one to three sampling fields at the edges of int64, uint64, float32 and
# OpenAI's ranges: this reaches the sampler, where an unchecked value once killed the engine.
edge_int = st.sampled_from(
    [0, 1, -1, 2, 20, 21, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30]
)
edge_float = st.sampled_from(
    [0.0, -0.0, 5e-324, 1e-310, 1e-5, 0.5, 1.0, 2.0, 2.0000001, -2.0, -2.0000001, 1e38, 3.5e38]
)
edge = st.one_of(edge_int, edge_float)
SAMPLING_FIELDS = [
    "temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "max_tokens", "n", "top_logprobs",
]  # fmt: skip
edge_fields = st.dictionaries(st.sampled_from(SAMPLING_FIELDS), edge, min_size=1, max_size=3)
edge_lists = st.fixed_dictionaries(
    {},
    optional={
        "stop_token_ids": st.lists(edge_int, max_size=3),
        "logit_bias": st.dictionaries(edge_int.map(str), edge, max_size=3),
        "stop": st.lists(st.text(max_size=3), max_size=20),
        "logprobs": st.booleans(),
    },
)

mangle = st.sampled_from(
    [*["none"] * 16, "truncate", "invalid_utf8", "bom", "empty", "top_array", "nan", "huge",
     "deep", "duplicate", "trailing", "oversize"]
)  # fmt: skip


def encode(body: object, how: str) -> bytes:
    raw = json.dumps(body, allow_nan=True).encode()  # ASCII: lone surrogates stay \\udXXX
    extra = {
        "nan": b'"temperature": NaN, "top_p": -Infinity',
        "huge": b'"top_k": 340282366920938463463374607431768211456, "seed": -1e400',
        "deep": b'"nest": ' + b"[" * 2000 + b"]" * 2000,
        "duplicate": b'"model": 5, "model": "tiny-demo"',
        "oversize": b'"pad": "' + b"x" * MAX_BODY + b'"',
    }.get(how)
    if how == "truncate":
        return raw[: max(1, len(raw) // 2)]
    if how == "invalid_utf8":
        return raw[:-1] + b', "x": "\xff\xfe\xed\xa0\x80"}'
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "empty":
        return b""
    if how == "top_array":
        return b"[" + raw + b"]"
    if how == "trailing":
        return raw + b" }{"
    if extra is not None and raw.endswith(b"}") and len(raw) > 2:
        return raw[:-1] + b", " + extra + b"}"
    return raw


content_types = st.sampled_from(["application/json", "text/plain", "", "application/x-www-form"])


# ---------------------------------------------------------------- the property


def check(http: httpx.Client, method: str, path: str, raw: bytes, ctype: str) -> None:
    r = http.request(method, path, content=raw, headers={"content-type": ctype})
    assert r.status_code in ALLOWED, (r.status_code, r.text[:400], raw[:300])
    assert "Traceback" not in r.text
    if r.status_code != 200:
        assert r.headers["content-type"].startswith("application/json"), r.headers
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str)
        assert error["param"] is None or isinstance(error["param"], str)
        assert error["code"] is None or isinstance(error["code"], str)
    elif r.headers["content-type"].startswith("text/event-stream"):
        assert r.text.endswith("data: [DONE]\n\n"), r.text[-300:]
    else:
        assert isinstance(r.json(), dict)


@FUZZ
@given(body=chat_body, how=mangle, ctype=content_types)
def test_fuzz_chat_completions(http, body, how, ctype):
    check(http, "POST", "/v1/chat/completions", encode(body, how), ctype)


@FUZZ
@given(body=completion_body, how=mangle, ctype=content_types)
def test_fuzz_completions(http, body, how, ctype):
    check(http, "POST", "/v1/completions", encode(body, how), ctype)


@FUZZ
@given(fields=edge_fields, lists=edge_lists, chat=st.booleans(), stream=st.booleans())
def test_fuzz_sampling_parameters_at_their_edges(http, fields, lists, chat, stream):
    body: dict = {"model": MODEL, "max_tokens": 2, "stream": stream, **lists, **fields}
    if chat:
        body["messages"] = [{"role": "user", "content": "hi"}]
        path = "/v1/chat/completions"
    else:
        body["prompt"] = "hi"
        if "logprobs" in body:
            body["logprobs"] = body.pop("top_logprobs", 1) if body["logprobs"] else None
        path = "/v1/completions"
    check(http, "POST", path, json.dumps(body).encode(), "application/json")
    assert http.get("/health").status_code == 200


@FUZZ
@given(messages=st.lists(st.one_of(message, garbage), min_size=1, max_size=3))
def test_fuzz_message_shapes(http, messages):
    body = {"model": MODEL, "messages": messages, "max_tokens": 2}
    check(http, "POST", "/v1/chat/completions", json.dumps(body).encode(), "application/json")


@settings(FUZZ, max_examples=60)
@given(
    body=garbage,
    how=mangle,
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=st.sampled_from(
        ["/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/v1/x"]
    ),
)
def test_fuzz_any_json_any_endpoint(http, body, how, method, path):
    raw = encode(body, how)
    r = http.request(method, path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code in ALLOWED, (r.status_code, r.text[:400])
    if r.status_code != 200:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_still_healthy_and_serving_after_fuzzing(http):
    """Runs last in this module."""
    assert http.get("/health").json() == {"status": "ok"}
    r = http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    )
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
    assert (
        'local_engine_num_requests_running{model_name="tiny-demo"} 0.0' in http.get("/metrics").text
    )
