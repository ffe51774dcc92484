"""OpenAI request -> prompt ids + SamplingParams, and the 400s for what we cannot serve."""

from __future__ import annotations

import json

import pytest
from test_tokenizer import QWEN25_TEMPLATE, WEATHER_TOOL, _write_tokenizer_dir

from local_engine.errors import RequestValidationError
from local_engine.server.protocol import ChatCompletionRequest, CompletionRequest
from local_engine.server.request_mapping import (
    chat_prompt_ids,
    completion_prompt_ids,
    sampling_params,
    tools_enabled,
)
from local_engine.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return Tokenizer.from_dir(_write_tokenizer_dir(tmp_path_factory.mktemp("tok"), QWEN25_TEMPLATE))


def chat(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **kw)


def test_openai_fields_map_to_sampling_params():
    p = sampling_params(
        chat(
            temperature=0,
            top_p=0.5,
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            stop="END",
            max_tokens=10,
            logprobs=True,
            top_logprobs=3,
            top_k=5,
            min_p=0.1,
            repetition_penalty=1.2,
            ignore_eos=True,
            stop_token_ids=[3],
        ),
        5,
        100,
    )
    assert (p.temperature, p.top_p, p.seed, p.presence_penalty, p.frequency_penalty) == (
        0,
        0.5,
        7,
        0.5,
        -0.5,
    )
    assert (p.stop, p.max_tokens, p.logprobs, p.top_logprobs) == (["END"], 10, True, 3)
    assert (p.top_k, p.min_p, p.repetition_penalty, p.ignore_eos, p.stop_token_ids) == (
        5,
        0.1,
        1.2,
        True,
        [3],
    )


def test_defaults_and_max_completion_tokens():
    p = sampling_params(chat(), 10, 100)
    assert (p.temperature, p.top_p, p.top_k, p.max_tokens, p.stop, p.logprobs) == (
        1.0,
        1.0,
        -1,
        90,
        [],
        False,
    )
    assert sampling_params(chat(max_tokens=50, max_completion_tokens=7), 10, 100).max_tokens == 7
    assert sampling_params(chat(top_k=0, stop=["a", ""]), 1, 10).top_k == -1


def test_completion_logprobs_int():
    req = CompletionRequest(model="m", prompt="x", logprobs=2)
    p = sampling_params(req, 1, 10)
    assert (p.logprobs, p.top_logprobs) == (True, 2)
    p = sampling_params(CompletionRequest(model="m", prompt="x", logprobs=0), 1, 10)
    assert (p.logprobs, p.top_logprobs) == (True, 0)
    assert sampling_params(CompletionRequest(model="m", prompt="x"), 1, 10).logprobs is False


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"n": 2}, "n"),
        ({"max_tokens": 96}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_bad_sampling_fields_are_400(kw, param):
    with pytest.raises(RequestValidationError) as err:
        sampling_params(chat(**kw), 5, 100)
    assert err.value.status == 400 and err.value.param == param


def test_prompt_longer_than_context_is_400():
    with pytest.raises(RequestValidationError, match="context length is 100"):
        sampling_params(chat(), 100, 100)


def test_chat_prompt_renders_template_with_tools_and_openai_tool_calls(tokenizer):
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "21C"},
    ]
    req = ChatCompletionRequest(model="m", messages=messages, tools=[WEATHER_TOOL])
    text = tokenizer.decode(chat_prompt_ids(req, tokenizer), skip_special_tokens=False)
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    assert '"name": "get_weather"' in text
    # arguments string became an object, so the template does not double-encode it
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in text
    assert text.endswith(
        "<tool_response>\n21C\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert tools_enabled(req)
    assert not tools_enabled(
        ChatCompletionRequest(
            model="m", messages=messages, tools=[WEATHER_TOOL], tool_choice="none"
        )
    )


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages.0.content",
        ),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"chat_template_kwargs": {"messages": []}}, "chat_template_kwargs"),
    ],
)
def test_bad_chat_requests_are_400(tokenizer, kw, param):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}
    with pytest.raises(RequestValidationError) as err:
        chat_prompt_ids(ChatCompletionRequest(**body), tokenizer)
    assert err.value.status == 400 and err.value.param == param


def test_forced_tool_choice_is_400():
    with pytest.raises(RequestValidationError) as err:
        tools_enabled(chat(tools=[WEATHER_TOOL], tool_choice="required"))
    assert err.value.param == "tool_choice"


def test_completion_prompts(tokenizer):
    ids = tokenizer.encode("Hello there")
    assert (
        completion_prompt_ids(CompletionRequest(model="m", prompt="Hello there"), tokenizer) == ids
    )
    assert (
        completion_prompt_ids(CompletionRequest(model="m", prompt=["Hello there"]), tokenizer)
        == ids
    )
    assert completion_prompt_ids(CompletionRequest(model="m", prompt=[5, 6]), tokenizer) == [5, 6]
    assert completion_prompt_ids(CompletionRequest(model="m", prompt=[[5, 6]]), tokenizer) == [5, 6]
    for prompt, match in ((["a", "b"], "one prompt"), ("", "empty"), ([], "empty")):
        with pytest.raises(RequestValidationError, match=match):
            completion_prompt_ids(CompletionRequest(model="m", prompt=prompt), tokenizer)
    with pytest.raises(RequestValidationError, match="echo"):
        completion_prompt_ids(CompletionRequest(model="m", prompt="x", echo=True), tokenizer)
