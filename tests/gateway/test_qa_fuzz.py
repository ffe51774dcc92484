"""Property-based fuzzing of the request path: hostile bodies never give a 500, a hang, a
traceback or a secret; every error is OpenAI's JSON; the gateway stays healthy.

Real parts: the gateway on uvicorn, loopback OpenAI-compatible mocks, httpx as the client.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.gateway_server import running_gateway
from tests.gateway.qa_support import (
    ALLOWED_STATUSES,
    AUTH,
    ENV,
    OPENAI_KEY,
    PATHS,
    check_error_body,
    check_no_leak,
    valid_chat,
    write_policy,
)
from tests.support.mock_openai import running_mock_openai
from tests.support.servers import MockControl

MAX_BODY = 200_000
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with (
        running_mock_openai(MockControl(models=["qwen-local", "embed-local"])) as (local, _),
        running_mock_openai(MockControl(api_key=OPENAI_KEY, models=["gpt-4o"])) as (oai, _),
    ):
        policy = write_policy(
            tmp_path_factory.mktemp("fuzz") / "p.yaml", local, oai, max_body=MAX_BODY
        )
        with running_gateway(policy, ENV) as (base, app):
            with httpx.Client(base_url=base, timeout=20) as client:
                yield client, app


# ---------------------------------------------------------------- strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # past i64/u64: orjson's edges
    st.floats(allow_nan=False, allow_infinity=False),  # NaN / Infinity literals: see `mangle`
    st.text(max_size=24),  # every unicode plane, lone surrogates included (as \\ud800 escapes)
)
garbage = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


# A wrong-typed value: drawn evenly among kinds (hypothesis alone favours None, the simplest).
wrong = st.sampled_from(["int", "float", "bool", "str", "list", "dict", "any"]).flatmap(
    lambda kind: {
        "int": st.integers(min_value=-(2**64), max_value=2**64),
        "float": st.floats(allow_nan=False, allow_infinity=False),
        "bool": st.booleans(),
        "str": st.text(max_size=12),
        "list": st.lists(scalars, min_size=1, max_size=3),
        "dict": st.dictionaries(st.text(max_size=6), scalars, min_size=1, max_size=3),
        "any": garbage,
    }[kind]
)


def maybe(valid: st.SearchStrategy, weight: int = 3) -> st.SearchStrategy:
    """Mostly a plausible value (so checks further down get reached), sometimes a wrong one."""
    return st.sampled_from([True] * weight + [False]).flatmap(lambda ok: valid if ok else wrong)


part = maybe(
    st.fixed_dictionaries(
        {
            "type": maybe(
                st.sampled_from(
                    ["text", "text", "image_url", "input_image", "image", "input_audio"]
                )
            )
        },
        optional={
            "text": maybe(st.text(max_size=40), 1),
            "image_url": maybe(st.fixed_dictionaries({"url": st.text(max_size=30)})),
        },
    ),
)
tool_call = maybe(
    st.fixed_dictionaries(
        {"id": maybe(st.text(max_size=8)), "type": st.just("function")},
        optional={
            "function": maybe(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "name": maybe(st.text(max_size=8), 1),
                        "arguments": maybe(st.text(max_size=20), 1),
                    },
                )
            )
        },
    ),
)
message = maybe(
    weight=8,
    valid=st.fixed_dictionaries(
        {
            "role": maybe(
                st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"]), 6
            )
        },
        optional={
            "content": maybe(
                st.one_of(st.text(max_size=60), st.lists(part, min_size=1, max_size=4))
            ),
            "tool_calls": maybe(st.lists(tool_call, min_size=1, max_size=3)),
            "name": garbage,
            "tool_call_id": garbage,
        },
    ),
)
tool = maybe(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": maybe(
                st.fixed_dictionaries(
                    {"name": st.text(max_size=8)}, optional={"parameters": garbage}
                )
            ),
        }
    ),
)
model = maybe(st.sampled_from(["auto"] * 8 + ["no-such-model"]), 8)
number = maybe(
    st.one_of(
        st.integers(min_value=0, max_value=1), st.floats(min_value=0, max_value=1), st.floats(-1, 3)
    ),
    8,
)
common = {
    "temperature": number,
    "top_p": number,
    "max_tokens": maybe(
        st.one_of(
            st.integers(min_value=-1, max_value=64), st.integers(min_value=0, max_value=2**64 - 1)
        ),
        8,
    ),
    "n": maybe(st.integers(min_value=0, max_value=3), 8),
    "seed": maybe(st.integers()),
    "stream": maybe(st.booleans(), 8),
    "stream_options": maybe(st.fixed_dictionaries({"include_usage": maybe(st.booleans())}), 8),
    "user": garbage,
    "metadata": maybe(
        st.dictionaries(
            st.sampled_from(["tier", "x"]),
            st.one_of(st.sampled_from(["gold", "silver"]), garbage),
            max_size=2,
        )
    ),
    "stop": garbage,
    "logit_bias": garbage,
    "extra_field": garbage,
}
chat_everything = st.fixed_dictionaries(
    {"model": model, "messages": maybe(st.lists(message, min_size=1, max_size=4), 6)},
    optional={
        **common,
        "tools": maybe(st.lists(tool, max_size=3), 8),
        "tool_choice": garbage,
        "functions": garbage,
        "response_format": maybe(
            st.fixed_dictionaries(
                {"type": maybe(st.sampled_from(["text", "json_object", "json_schema"]), 8)},
                optional={"json_schema": garbage},
            ),
            8,
        ),
        "max_completion_tokens": maybe(st.integers(min_value=0, max_value=10), 8),
    },
)
# Only the messages are hostile: most examples get past the top-level checks to routing.
chat_messages = st.fixed_dictionaries(
    {"model": st.just("auto"), "messages": st.lists(message, min_size=1, max_size=4)},
    optional={"stream": st.booleans()},
)
chat_body = st.one_of(chat_everything, chat_messages)
completions_body = st.fixed_dictionaries(
    {
        "model": model,
        "prompt": maybe(
            st.one_of(
                st.text(max_size=60),
                st.lists(st.one_of(st.text(max_size=10), st.integers(0, 50_000)), max_size=5),
            )
        ),
    },
    optional=common,
)
embeddings_body = st.fixed_dictionaries(
    {
        "model": model,
        "input": maybe(
            st.one_of(
                st.text(min_size=1, max_size=60),
                st.lists(st.text(max_size=10), min_size=1, max_size=4),
            )
        ),
    },
    # dimensions: never a huge int, which the mock upstream would try to allocate (the gateway passes it on)
    optional={
        "encoding_format": garbage,
        "dimensions": st.one_of(st.integers(1, 16), st.text(max_size=4), st.none()),
        "user": garbage,
    },
)


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# Byte-level mangling of an otherwise generated body.
mangle = st.sampled_from(
    [
        *["none"] * 24,
        "truncate", "invalid_utf8", "bom", "empty", "top_array", "top_scalar", "deep_field", "very_deep_field",
        "nan_field", "huge_int_field", "duplicate_keys", "trailing_garbage",
    ]
)  # fmt: skip


def encode(body: object, how: str) -> bytes:
    raw = json.dumps(body, allow_nan=True).encode()  # ASCII: lone surrogates become \\udXXX escapes
    if how == "truncate":
        return raw[: max(1, len(raw) // 2)]
    if how == "invalid_utf8":
        return raw[:-1] + b', "x": "\xff\xfe\xc3\x28"}' if raw.endswith(b"}") else raw + b"\xff"
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "empty":
        return b""
    if how == "top_array":
        return b"[" + raw + b"]"
    if how == "top_scalar":
        return b'"just a string"'
    if raw.endswith(b"}") and len(raw) > 2:
        extra = {
            "deep_field": b'"nest": '
            + _deep(300),  # parses (orjson reads 1024 levels), cannot be re-encoded
            "very_deep_field": b'"nest": ' + _deep(2000),
            "nan_field": b'"temperature": NaN, "top_p": -Infinity',
            "huge_int_field": b'"max_tokens": 340282366920938463463374607431768211456, "seed": -99999999999999999999',
            "duplicate_keys": b'"model": 5, "model": "auto"',
            "trailing_garbage": None,
        }.get(how)
        if how == "trailing_garbage":
            return raw + b" }{"
        if extra is not None:
            return raw[:-1] + b", " + extra + b"}"
    return raw


headers = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(
            ["application/json", "text/plain", "application/json; charset=latin-1", ""]
        ),
        "x-data-classification": st.sampled_from(["confidential", "public"]),
        "cache-control": st.sampled_from(["no-cache", "no-store", "max-age=0, no-cache", ",,,="]),
        "x-request-id": st.text(
            alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40
        ),
    },
)


# ---------------------------------------------------------------- the property


def _check(client: httpx.Client, path: str, raw: bytes, extra_headers: dict[str, str]) -> None:
    r = client.post(path, content=raw, headers={**AUTH, **extra_headers})
    text = r.text
    assert r.status_code in ALLOWED_STATUSES, (r.status_code, text[:500], raw[:300])
    check_no_leak(text)
    if r.status_code != 200:
        check_error_body(r)
    elif r.headers["content-type"].startswith("text/event-stream"):
        assert text.endswith("data: [DONE]\n\n"), text[-300:]
    else:
        assert isinstance(r.json(), dict)


@FUZZ
@given(body=chat_body, how=mangle, hdrs=headers)
def test_fuzz_chat_completions(gw, body, how, hdrs):
    _check(gw[0], PATHS["chat"], encode(body, how), hdrs)


@FUZZ
@given(body=completions_body, how=mangle, hdrs=headers)
def test_fuzz_completions(gw, body, how, hdrs):
    _check(gw[0], PATHS["completions"], encode(body, how), hdrs)


@FUZZ
@given(body=embeddings_body, how=mangle, hdrs=headers)
def test_fuzz_embeddings(gw, body, how, hdrs):
    _check(gw[0], PATHS["embeddings"], encode(body, how), hdrs)


@FUZZ
@given(body=garbage, how=mangle)
def test_fuzz_any_json_anywhere(gw, body, how):
    for path in PATHS.values():
        _check(gw[0], path, encode(body, how), {})


def test_still_healthy_after_fuzzing(gw):
    """Runs last in this module: the gateway still answers well-formed requests correctly."""
    client, app = gw
    assert client.get("/health").json() == {"status": "ok"}
    r = client.post(PATHS["chat"], json=valid_chat("after the storm"), headers=AUTH)
    assert (
        r.status_code == 200
        and r.json()["choices"][0]["message"]["content"] == "echo: after the storm"
    )
    r = client.post(PATHS["embeddings"], json={"model": "auto", "input": "x"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["data"], r.text
    assert all(b.state == "closed" for b in app.store.runtime.breakers.values())


def test_deeply_nested_body_is_a_400_not_a_500(gw):
    """orjson parses 1024 levels but encodes 254: the gateway re-encodes (model swap, cache key)."""
    client, _ = gw
    body = json.dumps(valid_chat()).encode()[:-1] + b', "nest": ' + _deep(300) + b"}"
    for path in (PATHS["chat"],):
        r = client.post(path, content=body, headers=AUTH)
        assert r.status_code == 400, r.text
        assert "nested" in check_error_body(r)["message"]
    shallow = json.dumps(valid_chat()).encode()[:-1] + b', "nest": ' + _deep(200) + b"}"
    assert client.post(PATHS["chat"], content=shallow, headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (
            [{"role": "user", "content": [{"type": "text", "text": 5}]}],
            "messages[0].content[0].text",
        ),
        ([{"role": "user", "content": ["just a string part"]}], "messages[0].content[0]"),
        ([{"role": "user", "content": [{"text": "no type"}]}], "messages[0].content[0]"),
        ([{"role": "assistant", "content": "x", "tool_calls": 5}], "messages[0].tool_calls"),
        (
            [{"role": "assistant", "content": "x", "tool_calls": [{"function": {"name": 1}}]}],
            "messages[0].tool_calls[0].function.name",
        ),
        (
            [
                {
                    "role": "assistant",
                    "content": "x",
                    "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
        ([{"role": "assistant", "content": "x", "tool_calls": ["f"]}], "messages[0].tool_calls[0]"),
    ],
)
def test_fields_the_router_reads_are_type_checked(gw, messages, param):
    """These used to crash token estimation or the difficulty scorer (500 with a traceback)."""
    r = gw[0].post(PATHS["chat"], json={"model": "auto", "messages": messages}, headers=AUTH)
    assert r.status_code == 400, r.text
    assert check_error_body(r)["param"] == param
