"""The OpenAI-compatible server, end to end: real engine + tiny random checkpoint, real uvicorn on
loopback, the official ``openai`` SDK as the client."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time

import httpx
import openai
import pytest
from server_harness import running_server

from local_engine.config import EngineConfig
from local_engine.demo_model import build_tiny_checkpoint
from local_engine.tokenizer import Tokenizer

MODEL = "tiny-demo"
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello! What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]


def engine_config(model_dir, **kw) -> EngineConfig:
    base = dict(
        model=str(model_dir),
        device="cpu",
        dtype="float32",
        num_kv_blocks=256,
        block_size=16,
        max_num_seqs=8,
        max_num_batched_tokens=512,
        served_model_name=MODEL,
    )
    return EngineConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("srv") / "model", arch="qwen2")


@pytest.fixture(scope="module")
def base_url(model_dir):
    with running_server(engine_config(model_dir)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def metric(base_url: str, name: str) -> float:
    text = httpx.get(f"{base_url}/metrics").text
    m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    assert m, f"{name} not exported"
    return float(m.group(1))


# conversation, streaming and not
def test_chat_conversation_non_streaming(client, model_dir):
    r = client.chat.completions.create(
        model=MODEL, messages=CONVERSATION, max_tokens=12, temperature=0
    )
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == MODEL and r.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    tok = Tokenizer.from_dir(model_dir)
    prompt_ids = tok.encode(tok.apply_chat_template(CONVERSATION))
    assert r.usage.prompt_tokens == len(prompt_ids)
    assert 1 <= r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streaming_equals_non_streaming_greedy(client):
    kw = dict(
        model=MODEL,
        messages=CONVERSATION,
        max_tokens=16,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    full = client.chat.completions.create(**kw)
    chunks = list(
        client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["length"] == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_matches_transformers_greedy(client, model_dir):
    transformers = pytest.importorskip("transformers")
    import torch

    prompt = [5, 17, 42, 99, 7, 3, 250, 11]
    r = client.completions.create(
        model=MODEL,
        prompt=prompt,
        max_tokens=10,
        temperature=0,
        extra_body={"ignore_eos": True},
        logprobs=1,
    )
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    with torch.inference_mode():
        out = hf.generate(
            torch.tensor([prompt]), max_new_tokens=10, min_new_tokens=10, do_sample=False
        )
    expected = Tokenizer.from_dir(model_dir).decode(out[0, len(prompt) :].tolist())
    assert r.choices[0].text == expected
    assert r.usage.prompt_tokens == len(prompt) and r.usage.completion_tokens == 10
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == 10 and all(x <= 0 for x in lp.token_logprobs)
    # greedy: the chosen token is the most likely one
    assert all(
        abs(max(top.values()) - chosen) < 1e-4
        for top, chosen in zip(lp.top_logprobs, lp.token_logprobs, strict=True)
    )


def test_completion_text_prompt_streaming(client):
    kw = dict(
        model=MODEL,
        prompt="Once upon a time",
        max_tokens=8,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    full = client.completions.create(**kw).choices[0].text
    streamed = "".join(
        c.choices[0].text for c in client.completions.create(**kw, stream=True) if c.choices
    )
    assert streamed == full


# sampling fields
def test_seed_reproducible_and_stop_strings(client):
    kw = dict(
        model=MODEL,
        messages=CONVERSATION,
        max_tokens=24,
        temperature=1.0,
        top_p=0.9,
        extra_body={"ignore_eos": True, "top_k": 50},
    )
    a = client.chat.completions.create(**kw, seed=1234).choices[0].message.content
    b = client.chat.completions.create(**kw, seed=1234).choices[0].message.content
    assert a == b
    stop = a.strip()[len(a.strip()) // 2 :][:3]
    if stop.strip():
        c = client.chat.completions.create(**kw, seed=1234, stop=[stop])
        assert c.choices[0].finish_reason == "stop"
        assert stop not in c.choices[0].message.content
        assert a.startswith(c.choices[0].message.content)


def test_chat_logprobs(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=CONVERSATION,
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        extra_body={"ignore_eos": True},
    )
    content = r.choices[0].logprobs.content
    assert len(content) == 5
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-4
        assert entry.bytes == list(entry.token.encode())


# errors
def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-nope", messages=CONVERSATION)
    assert err.value.body["code"] == "model_not_found" and err.value.body["param"] == "model"


def test_default_alias_names_the_served_model(client):
    r = client.chat.completions.create(model="default", messages=CONVERSATION, max_tokens=4)
    assert r.choices[0].message.content is not None


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"n": 2}, "n"),
        ({"max_tokens": 10**6}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": []}, "messages"),
    ],
)
def test_invalid_requests_are_400_in_openai_format(client, kw, param):
    body = {"model": MODEL, "messages": CONVERSATION, **kw}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**body)
    assert set(err.value.body) == {"message", "type", "param", "code"}
    assert err.value.body["type"] == "invalid_request_error" and err.value.body["param"] == param


BIG = 2**63


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ('"top_k": 9223372036854775808', "top_k"),
        ('"top_k": 18446744073709551616', "top_k"),
        ('"top_k": -5', "top_k"),
        ('"temperature": NaN', None),
        ('"temperature": Infinity', None),
        ('"temperature": 1e400', None),
        ('"temperature": 2.5', "temperature"),
        ('"presence_penalty": -Infinity', None),
        ('"frequency_penalty": 2.01', "frequency_penalty"),
        ('"repetition_penalty": 0', "repetition_penalty"),
        ('"repetition_penalty": 1e39', "repetition_penalty"),
        ('"top_p": 0', "top_p"),
        ('"min_p": 1.5', "min_p"),
        ('"seed": 36893488147419103232', "seed"),
        ('"max_tokens": 9223372036854775808', "max_tokens"),
        ('"n": 9223372036854775808', "n"),
        ('"logprobs": true, "top_logprobs": 9223372036854775808', "top_logprobs"),
        ('"stop": ["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]', "stop"),
        ('"stop_token_ids": [9223372036854775807]', None),
        ('"logit_bias": {"5": 101}', "logit_bias"),
        ('"logit_bias": {"x": 1}', "logit_bias"),
        ('"logit_bias": {"99999999": 1}', None),
    ],
)
def test_out_of_range_sampling_parameters_are_400_and_the_engine_keeps_serving(
    base_url, client, fields, param
):
    """Issue #8 item 1: top_k = 2**63 overflowed in the sampler, killed the step loop for good."""
    body = f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hi"}}], {fields}}}'
    r = httpx.post(
        f"{base_url}/v1/chat/completions",
        content=body.encode(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    assert httpx.get(f"{base_url}/health").status_code == 200
    ok = client.chat.completions.create(model=MODEL, messages=CONVERSATION, max_tokens=2)
    assert ok.choices[0].finish_reason in ("stop", "length")


def test_logit_bias_steers_greedy_decoding(client, model_dir):
    tok = Tokenizer.from_dir(model_dir)
    forced_id = tok.encode("hello", add_special_tokens=False)[0]
    forced = client.completions.create(
        model=MODEL,
        prompt=[10, 11],
        max_tokens=3,
        temperature=0,
        logit_bias={str(forced_id): 100},
        extra_body={"ignore_eos": True},
    )
    assert forced.choices[0].text == tok.decode([forced_id] * 3)
    plain = client.completions.create(model=MODEL, prompt=[10, 11], max_tokens=1, temperature=0)
    first = tok.encode(plain.choices[0].text, add_special_tokens=False)[0]
    banned = client.completions.create(
        model=MODEL, prompt=[10, 11], max_tokens=1, temperature=0, logit_bias={str(first): -100}
    )
    assert banned.choices[0].text != plain.choices[0].text


def test_bad_token_ids_and_bad_json_are_400(base_url, client):
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt=[1, 10**7], max_tokens=2)
    r = httpx.post(
        f"{base_url}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "error" in r.json()


def test_models_health_metrics(base_url, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(f"{base_url}/health").json() == {"status": "ok"}
    client.chat.completions.create(model=MODEL, messages=CONVERSATION, max_tokens=3)
    text = httpx.get(f"{base_url}/metrics").text
    for name in (
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:gpu_cache_usage_perc",
        "vllm:kv_cache_usage_perc",
    ):
        assert f'{name}{{model_name="{MODEL}"}}' in text
    assert metric(base_url, "local_engine_prompt_tokens_total") > 0
    assert metric(base_url, "local_engine_generation_tokens_total") > 0
    assert metric(base_url, "local_engine_time_to_first_token_seconds_count") > 0
    assert metric(base_url, "local_engine_e2e_request_latency_seconds_count") > 0
    assert metric(base_url, "local_engine_inter_token_latency_seconds_count") > 0
    assert metric(base_url, "local_engine_prefix_cache_queries_total") > 0
    assert (
        metric(base_url, "local_engine_prefix_cache_hits_total") > 0
    )  # same conversation, many times


# disconnect and back-pressure
def _wait_idle(base_url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            metric(base_url, "vllm:num_requests_running") == 0
            and metric(base_url, "vllm:kv_cache_usage_perc") == 0
        ):
            return
        time.sleep(0.05)
    raise AssertionError("the engine did not go idle")


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_aborts_request(base_url, stream):
    max_tokens = 480  # near the context (512): many steps, so the abort lands long before the end
    body = {
        "model": MODEL,
        "prompt": [10, 11, 12],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
    }
    generated_before = metric(base_url, "local_engine_generation_tokens_total")
    with httpx.Client(timeout=30) as http:
        if stream:
            with http.stream("POST", f"{base_url}/v1/completions", json=body) as r:
                assert r.status_code == 200
                assert next(line for line in r.iter_lines() if line.startswith("data:"))
        else:
            # leave while the engine holds the request (seen in its gauge), not after a short
            # client timeout: a fast machine can finish first, a loaded one not even send it
            host, port = base_url.removeprefix("http://").split(":")
            payload = json.dumps(body).encode()
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(
                    b"POST /v1/completions HTTP/1.1\r\nhost: x\r\n"
                    b"content-type: application/json\r\n"
                    + f"content-length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                deadline = time.monotonic() + 30
                while metric(base_url, "vllm:num_requests_running") < 1:
                    assert time.monotonic() < deadline, "the request never reached the engine"
                    time.sleep(0.005)
    _wait_idle(base_url)  # nothing running, KV blocks all free
    generated = metric(base_url, "local_engine_generation_tokens_total") - generated_before
    assert generated < max_tokens


async def test_queue_full_is_503_with_retry_after(model_dir):
    config = engine_config(model_dir, max_num_seqs=1, max_waiting=1)
    with running_server(config) as url:
        body = {"model": MODEL, "prompt": "x", "max_tokens": 400, "ignore_eos": True}
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            running = asyncio.create_task(http.post("/v1/completions", json=body))
            while metric(url, "vllm:num_requests_running") < 1:
                await asyncio.sleep(0.02)
            waiting = asyncio.create_task(http.post("/v1/completions", json=body))
            while metric(url, "vllm:num_requests_waiting") < 1:
                await asyncio.sleep(0.02)
            r = await http.post("/v1/completions", json=body)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "queue_full"
            with openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as sdk:
                with pytest.raises(openai.InternalServerError) as err:
                    sdk.completions.create(model=MODEL, prompt="x", max_tokens=2)
                assert err.value.status_code == 503
            for task in (running, waiting):
                task.cancel()
            await asyncio.gather(running, waiting, return_exceptions=True)


def test_tool_definitions_reach_the_template(client, model_dir):
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    plain = client.chat.completions.create(model=MODEL, messages=CONVERSATION, max_tokens=1)
    with_tools = client.chat.completions.create(
        model=MODEL, messages=CONVERSATION, max_tokens=1, tools=[tool]
    )
    tok = Tokenizer.from_dir(model_dir)
    expected = tok.encode(
        tok.apply_chat_template(CONVERSATION, tools=[json.loads(json.dumps(tool))])
    )
    assert with_tools.usage.prompt_tokens == len(expected)
    if "tools" in str(tok.chat_template):
        assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens
