"""The load-test mock upstream speaks enough HTTP/1.1 and OpenAI for the official client."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_mock():
    spec = importlib.util.spec_from_file_location(
        "mock_upstream", ROOT / "bench" / "mock_upstream.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mock = _load_mock()


@pytest.fixture
async def upstream():
    server = await mock.serve("127.0.0.1", 0, chunks=4)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


def _client(port: int) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0
    )


async def test_chat_completion_with_usage(upstream):
    async with _client(upstream) as client:
        for _ in range(3):  # keep-alive: the same pooled connection answers again
            r = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
            assert r.choices[0].message.content == mock.REPLY_TEXT
            assert r.usage.prompt_tokens == 12 and r.usage.completion_tokens == 13


async def test_stream_has_the_asked_chunks_and_optional_usage(upstream):
    async with _client(upstream) as client:
        stream = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == mock.REPLY_TEXT
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 4
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 25
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert all(c.usage is None for c in [c async for c in stream])


async def test_text_completion_and_embeddings(upstream):
    async with _client(upstream) as client:
        t = await client.completions.create(model="m", prompt="hi")
        assert t.choices[0].text == mock.REPLY_TEXT
        e = await client.embeddings.create(model="m", input="hi")
        assert len(e.data[0].embedding) == 4


async def _exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=5)  # the last request asks to close
    writer.close()
    return data


async def test_pipelined_requests_are_answered_in_order(upstream):
    raw = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    data = await _exchange(upstream, raw)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)  # bodies end without a newline
    assert statuses == [b"200", b"200", b"200", b"404"]
    order = [
        data.index(b'"chat.completion"'),
        data.index(b'"object":"list"'),
        data.index(b'"text_completion"'),
    ]
    assert order == sorted(order)


async def test_bad_body_is_a_400(upstream):
    async with _client(upstream) as client:
        with pytest.raises(openai.BadRequestError):
            await client.post("/chat/completions", body=[1, 2], cast_to=object)
    data = await _exchange(
        upstream,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: 3\r\n\r\n{x}",
    )
    assert data.startswith(b"HTTP/1.1 400 ")


async def test_messages_and_responses_for_the_native_rows(upstream):
    """The two native protocols, whole and streamed, as their official SDKs read them."""
    import anthropic

    ac = anthropic.AsyncAnthropic(
        base_url=f"http://127.0.0.1:{upstream}", api_key="sk-test", max_retries=0
    )
    async with ac:
        kw = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        msg = await ac.messages.create(**kw)
        assert msg.content[0].text == mock.REPLY_TEXT and msg.usage.output_tokens == 13
        async with ac.messages.stream(**kw) as s:
            kinds = [e.type async for e in s]
            final = await s.get_final_message()
        assert final.content[0].text == mock.REPLY_TEXT and kinds.count("text") == 4
    async with _client(upstream) as client:
        r = await client.responses.create(model="m", input="hi")
        assert r.output_text == mock.REPLY_TEXT and r.usage.total_tokens == 25
        async with client.responses.stream(model="m", input="hi") as s:
            kinds = [e.type async for e in s]
            final = await s.get_final_response()
        assert final.output_text == mock.REPLY_TEXT and kinds[-1] == "response.completed"
