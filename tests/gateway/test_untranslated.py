"""What has no chat form (``UntranslatableError``), what is malformed (a plain 400), and the
routing view of an untranslatable body, which no body can make fail."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest

from gateway.errors import InvalidRequestError, UntranslatableError
from gateway.protocols import anthropic, responses, untranslated
from gateway.protocols.codecs import ANTHROPIC
from gateway.routing.scorer import prompt_text
from gateway.routing.tokens import TOKENS_PER_IMAGE
from gateway.server.validate import validate

FILE_IMAGE = {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
DOCUMENT = {"type": "document", "source": {"type": "file", "file_id": "file_2"}}


def _messages(*content: Any, **extra: Any) -> dict[str, Any]:
    msgs = [{"role": "user", "content": list(content)}]
    return {"model": "m", "max_tokens": 8, "messages": msgs, **extra}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (_messages(FILE_IMAGE), "messages[0].content[0].source"),
        (_messages(DOCUMENT), "messages[0]"),
        (_messages({"type": "search_result", "title": "t", "content": []}), "messages[0]"),
        (
            {
                "model": "m",
                "max_tokens": 8,
                "messages": [{"role": "assistant", "content": [{"type": "thinking"}]}],
            },
            "messages",
        ),
        (
            _messages(
                {"type": "text", "text": "look it up"},
                tools=[{"type": "web_search_20250305", "name": "web_search"}],
                tool_choice={"type": "tool", "name": "web_search"},
            ),
            "tool_choice",
        ),
    ],
    ids=["file-image", "document-turn", "search-result-turn", "no-turn-left", "forced-server-tool"],
)
def test_messages_with_no_chat_form(body, param):
    with pytest.raises(UntranslatableError) as e:
        anthropic.to_chat(body)
    assert e.value.param == param and e.value.code == "untranslatable"


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": [{"role": "user", "content": "x"}]},  # no max_tokens
        _messages({"type": "image", "source": {"data": "..."}}),  # a source without a type
        _messages({"text": "no type"}),
        _messages({"type": "text", "text": 3}),
    ],
    ids=["max-tokens", "source-type", "block-type", "text-type"],
)
def test_malformed_messages_stay_plain_errors(body):
    with pytest.raises(InvalidRequestError) as e:
        anthropic.to_chat(body)
    assert not isinstance(e.value, UntranslatableError)


def test_a_document_beside_text_is_still_dropped_in_translation():
    chat = anthropic.to_chat(_messages(DOCUMENT, {"type": "text", "text": "summarize"}))
    assert chat["messages"] == [{"role": "user", "content": "summarize"}]


def _input(*items: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "input": list(items), **extra}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            _input({"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}),
            "input[0].content[0]",
        ),
        (
            _input({"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}),
            "input[0].content",
        ),
        (_input({"type": "item_reference", "id": "msg_1"}), "input[0]"),
        (_input({"type": "reasoning", "id": "rs_1", "summary": []}), "input"),
        (
            _input({"role": "user", "content": "hi"}, tool_choice={"type": "web_search_preview"}),
            "tool_choice",
        ),
        (
            _input(
                {"role": "user", "content": "hi"},
                tool_choice={"type": "allowed_tools", "mode": "auto", "tools": []},
            ),
            "tool_choice",
        ),
    ],
    ids=["image-file-id", "file-only", "item-reference", "no-item-left", "hosted-tool", "allowed"],
)
def test_responses_with_no_chat_form(body, param):
    with pytest.raises(UntranslatableError) as e:
        responses.to_chat(body, None)
    assert e.value.param == param


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m"},  # no input
        _input({"role": "user", "content": [{"type": "input_image"}]}),  # neither url nor file
        _input(
            {"role": "user", "content": "hi"},
            tools=[{"type": "function", "name": "f"}],
            tool_choice="sometimes",
        ),
        _input({"role": ["user"], "content": "x"}),  # was a TypeError (500): unhashable
    ],
    ids=["no-input", "image-source", "tool-choice-string", "role-list"],
)
def test_malformed_responses_stay_plain_errors(body):
    with pytest.raises(InvalidRequestError) as e:
        responses.to_chat(body, None)
    assert not isinstance(e.value, UntranslatableError)


def test_an_assistant_refusal_alone_still_translates():
    body = _input(
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
        {"role": "user", "content": "please"},
    )
    assert [m["role"] for m in responses.to_chat(body, None)["messages"]] == [
        "user",
        "assistant",
        "user",
    ]


def test_the_routing_view_of_an_untranslatable_messages_body():
    body = {
        "model": "auto",
        "max_tokens": 64,
        "stream": True,
        "system": [{"type": "text", "text": "be brief"}],
        "metadata": {"data_classification": "internal"},
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": [DOCUMENT, FILE_IMAGE]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s" * 400},
                    {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "abc"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "tool says"},
                    {"type": "text", "text": "now answer"},
                    {"type": "brand_new_block", "text": "future text", "payload": {"x": [1]}},
                ],
            },
        ],
    }
    why = UntranslatableError("no chat form", param="messages[0]")
    req = untranslated.request("anthropic", body, orjson.dumps(body), why)
    assert req.untranslatable is why and req.native is body and req.stream
    assert req.model == "auto" and req.max_output_tokens == 64
    assert req.needs == {"tools", "vision"} and req.images == 1
    assert req.metadata == {"data_classification": "internal"}
    # the scorer reads system and user text, not tool results nor signatures
    assert prompt_text(req.messages) == "be brief\n\nnow answer\nfuture text"
    assert [m["role"] for m in req.messages] == ["system", "user", "assistant", "user", "tool"]
    assert req.prompt_tokens > 2 * TOKENS_PER_IMAGE  # the image and the document
    plain = untranslated.request("anthropic", {**body, "tools": []}, b"", why)
    assert "tools" not in plain.needs and plain.prompt_tokens < req.prompt_tokens


def test_the_routing_view_of_an_untranslatable_responses_body_with_history():
    history = [
        {"role": "user", "content": [{"type": "input_file", "file_id": "f"}]},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thought"}]},
    ]
    body = {
        "model": "auto",
        "instructions": "be brief",
        "input": [
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": '{"a": 1}'},
            {"type": "function_call_output", "call_id": "c", "output": "result"},
            {"role": "user", "content": [{"type": "input_text", "text": "next"}]},
        ],
        "max_output_tokens": 32,
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {}}},
    }
    why = UntranslatableError("no chat form", param="previous_response_id")
    req = untranslated.request("responses", body, b"", why, history)
    assert req.needs == {"json_schema"} and req.max_output_tokens == 32 and not req.stream
    assert prompt_text(req.messages) == "be brief\n\nnext"
    roles = [m["role"] for m in req.messages]
    assert roles == ["system", "user", "assistant", "assistant", "tool", "user"]


def _junk(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["str", "int", "none", "bool", "float"] + (["list", "dict"] * 3 if depth < 6 else [])
    kind = rng.choice(kinds)
    if kind == "list":
        return [_junk(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == "dict":
        keys = ["type", "text", "content", "source", "input", "role", "output", "summary", "data"]
        types = ["text", "image", "document", "tool_result", "input_file", "x", 3, None]
        d = {rng.choice(keys): _junk(rng, depth + 1) for _ in range(rng.randint(0, 5))}
        if rng.random() < 0.6:
            d["type"] = rng.choice(types)
        return d
    return {"str": "w" * rng.randint(0, 9), "int": 7, "none": None, "bool": True, "float": 0.5}[
        kind
    ]


@pytest.mark.parametrize("protocol", ["anthropic", "responses"])
def test_the_routing_view_never_fails(protocol):
    rng = random.Random(11)
    why = UntranslatableError("no chat form")
    for _ in range(1500):
        body = {"model": "m"}
        for key in ("messages", "input", "system", "instructions", "tools", "text", "max_tokens"):
            if rng.random() < 0.7:
                body[key] = _junk(rng)
        history = _junk(rng) if rng.random() < 0.3 else None
        history = history if isinstance(history, list) else None
        req = untranslated.request(protocol, body, b"", why, history)
        assert req.prompt_tokens >= 0 and req.images >= 0
        prompt_text(req.messages)  # what the scorer reads is chat-shaped


def test_translation_raises_only_request_errors():
    """Whatever the body, translating it either works or raises InvalidRequestError (a 400),
    UntranslatableError among them: never another exception (a 500)."""
    rng = random.Random(3)
    roles = ["user", "assistant", ["user"], {"a": 1}]
    for _ in range(3000):
        body: dict[str, Any] = {"model": "m", "max_tokens": 5}
        for key in ("messages", "input", "system", "instructions", "tools", "tool_choice", "text"):
            if rng.random() < 0.7:
                body[key] = _junk(rng)
        if rng.random() < 0.5:
            body["messages"] = [{"role": rng.choice(roles), "content": _junk(rng)}]
            body["input"] = [{"role": rng.choice(roles), "content": _junk(rng)}]
        for translate in (anthropic.to_chat, lambda b: responses.to_chat(b, None)):
            try:
                validate("chat", translate(body))
            except InvalidRequestError:
                pass


def test_the_codec_routes_an_untranslatable_body_instead_of_refusing_it():
    body = _messages(DOCUMENT)
    raw = orjson.dumps(body)
    req = asyncio.run(ANTHROPIC.decode(body, raw, "team"))
    assert req.untranslatable is not None and req.untranslatable.param == "messages[0]"
    assert req.native is body and req.native_raw == raw and req.protocol == "anthropic"
    with pytest.raises(InvalidRequestError):  # a malformed body is still refused at once
        asyncio.run(ANTHROPIC.decode({"model": "m", "messages": []}, b"", "team"))
