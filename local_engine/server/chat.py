"""POST /v1/chat/completions: chat template -> engine -> message or SSE chunks (tool calls parsed)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from local_engine.errors import EngineError
from local_engine.server.encoding import SSE_DONE, JSONResponse, completion_head, sse_event
from local_engine.server.errors import stream_error_event
from local_engine.server.generation import (
    Generation,
    ServerContext,
    start_generation,
    until_disconnect,
)
from local_engine.server.logprobs import chat_logprobs
from local_engine.server.protocol import ChatCompletionRequest
from local_engine.server.request_mapping import chat_prompt_ids, sampling_params, tools_enabled
from local_engine.server.tool_parser import StreamingToolParser, ToolCallDelta, parse_tool_calls

__all__ = ["create_chat_completion"]


def _finish_reason(reason: str | None, has_tool_calls: bool) -> str | None:
    return "tool_calls" if has_tool_calls and reason == "stop" else reason


async def create_chat_completion(
    ctx: ServerContext, req: ChatCompletionRequest, request: Request
) -> Response:
    parse_tools = tools_enabled(req)
    prompt_ids = await ctx.off_loop(chat_prompt_ids, req, ctx.tokenizer, ctx.max_model_len)
    params = sampling_params(req, len(prompt_ids), ctx.max_model_len)
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    gen = await start_generation(ctx, request, request_id, prompt_ids, params)
    if req.stream:
        events = _stream(ctx, req, gen, request_id, parse_tools)
        return StreamingResponse(events, media_type="text/event-stream")
    try:
        text, logprobs, reason = await until_disconnect(request, _collect(ctx, req, gen))
    finally:
        await gen.close()
    content, calls = parse_tool_calls(text) if parse_tools else (text, [])
    message: dict = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [c.to_openai() for c in calls]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": {"content": logprobs} if req.logprobs else None,
        "finish_reason": _finish_reason(reason, bool(calls)),
    }
    head = completion_head(request_id, "chat.completion", ctx.model_name)
    return JSONResponse({**head, "choices": [choice], "usage": gen.usage()})


async def _collect(
    ctx: ServerContext, req: ChatCompletionRequest, gen: Generation
) -> tuple[str, list[dict], str | None]:
    pieces, logprobs, reason = [], [], None
    async for out in gen:
        pieces.append(out.new_text)
        if req.logprobs and out.logprobs:
            logprobs += chat_logprobs(ctx.tokenizer, out.logprobs)
        reason = out.finish_reason
    return "".join(pieces), logprobs, reason


async def _stream(
    ctx: ServerContext,
    req: ChatCompletionRequest,
    gen: Generation,
    request_id: str,
    parse_tools: bool,
) -> AsyncIterator[bytes]:
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    base = completion_head(request_id, "chat.completion.chunk", ctx.model_name)

    def chunk(delta: dict, finish_reason: str | None = None, logprobs: list | None = None) -> bytes:
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": {"content": logprobs} if logprobs is not None else None,
            "finish_reason": finish_reason,
        }
        body = {**base, "choices": [choice]}
        if include_usage:
            body["usage"] = None
        return sse_event(body)

    parser = StreamingToolParser() if parse_tools else None
    try:
        yield chunk({"role": "assistant", "content": ""})
        async for out in gen:
            text = out.new_text
            calls: list[ToolCallDelta] = []
            if parser is not None:
                text, calls = parser.feed(text)
                if out.finished:
                    rest, more = parser.finish()
                    text, calls = text + rest, calls + more
            delta: dict = {}
            if text:
                delta["content"] = text
            if calls:
                delta["tool_calls"] = [c.to_openai() for c in calls]
            logprobs = (
                chat_logprobs(ctx.tokenizer, out.logprobs)
                if req.logprobs and out.logprobs
                else None
            )
            if delta or logprobs:
                yield chunk(delta, logprobs=logprobs)
            if out.finished:
                has_calls = parser is not None and parser.num_calls > 0
                yield chunk({}, finish_reason=_finish_reason(out.finish_reason, has_calls))
        if include_usage:
            yield sse_event({**base, "choices": [], "usage": gen.usage()})
        yield SSE_DONE
    except EngineError as exc:  # the headers went out: end the stream with an error event
        yield stream_error_event(exc)
    finally:
        await gen.close()
