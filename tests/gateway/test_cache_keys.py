from __future__ import annotations

import pytest

from gateway.cache import cache_decision, cache_key
from gateway.config.schema import CacheConfig

BASE = {
    "model": "auto",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0,
    "max_tokens": 16,
}


def test_key_ignores_order_and_delivery_fields():
    reordered = {
        "max_tokens": 16,
        "temperature": 0,
        "messages": [{"content": "hi", "role": "user"}],
        "model": "auto",
    }
    delivery = {
        **BASE,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u1",
        "metadata": {"a": "b"},
    }
    k = cache_key("chat", BASE, "t")
    assert cache_key("chat", reordered, "t") == k
    assert cache_key("chat", delivery, "t") == k
    assert len(k) == 64 and int(k, 16) >= 0


def test_int_and_float_sampling_values_give_one_key():
    assert cache_key("chat", {**BASE, "temperature": 0}, "t") == cache_key(
        "chat", {**BASE, "temperature": 0.0}, "t"
    )
    assert cache_key("chat", {**BASE, "top_p": 1}, "t") == cache_key(
        "chat", {**BASE, "top_p": 1.0}, "t"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o"},
        {"messages": [{"role": "user", "content": "hello"}]},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"tool_choice": "required"},
        {"parallel_tool_calls": False},
        {"response_format": {"type": "json_object"}},
        {"temperature": 0.5},
        {"top_p": 0.9},
        {"top_k": 5},
        {"max_tokens": 17},
        {"max_completion_tokens": 16},
        {"stop": ["\n"]},
        {"seed": 1},
        {"presence_penalty": 0.1},
        {"frequency_penalty": 0.1},
        {"logit_bias": {"50256": -100}},
        {"logprobs": True},
        {"reasoning_effort": "high"},
        {
            "chat_template_kwargs": {"enable_thinking": False}
        },  # unknown field passed through upstream
    ],
)
def test_every_answer_changing_field_changes_the_key(change):
    assert cache_key("chat", {**BASE, **change}, "t") != cache_key("chat", BASE, "t")


def test_team_and_operation_separate_keys():
    assert cache_key("chat", BASE, "team-a") != cache_key("chat", BASE, "team-b")
    emb = {"model": "auto", "input": "x"}
    assert cache_key("embeddings", emb, "t") != cache_key("completions", emb, "t")
    assert cache_key("embeddings", emb, "t") != cache_key(
        "embeddings", {**emb, "dimensions": 64}, "t"
    )


CFG = CacheConfig()


@pytest.mark.parametrize(
    ("body", "header", "op", "expected"),
    [
        ({"temperature": 0}, None, "chat", "use"),
        ({"temperature": 0.0}, None, "chat", "use"),
        ({}, None, "chat", "bypass"),  # absent temperature is 1.0 for OpenAI
        ({"temperature": 0.7}, None, "chat", "bypass"),
        ({"temperature": 0.7, "seed": 7}, None, "chat", "use"),
        ({"seed": 0}, None, "completions", "use"),
        ({}, None, "embeddings", "use"),
        ({"temperature": 0}, "no-cache", "chat", "store_only"),
        ({"temperature": 0}, "No-Cache, max-age=0", "chat", "store_only"),
        ({"temperature": 0}, "no-store", "chat", "bypass"),
        ({"temperature": 0}, "no-cache, no-store", "chat", "bypass"),
        ({"temperature": 0}, "max-age=60", "chat", "use"),
        ({"temperature": 0, "n": 2}, None, "chat", "bypass"),
        ({"temperature": 0, "n": 1}, None, "chat", "use"),
        ({"temperature": True}, None, "chat", "bypass"),
        ({}, "no-cache", "chat", "bypass"),  # not cacheable at all: no refresh either
    ],
)
def test_cache_decision(body, header, op, expected):
    assert cache_decision(body, header, CFG, op) == expected


def test_cache_decision_follows_config():
    everything = CacheConfig(deterministic_only=False)
    assert cache_decision({"temperature": 1.0}, None, everything, "chat") == "use"
    assert cache_decision({"temperature": 1.0}, "no-store", everything, "chat") == "bypass"
    assert cache_decision({"temperature": 0}, None, CacheConfig(enabled=False), "chat") == "bypass"


def test_protocol_is_part_of_the_key_and_openai_keys_are_unchanged():
    k = cache_key("chat", BASE, "t")
    assert cache_key("chat", BASE, "t", "openai") == k  # entries stored before stay valid
    others = {cache_key("chat", BASE, "t", p) for p in ("anthropic", "responses")}
    assert len(others) == 2 and k not in others
