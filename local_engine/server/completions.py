"""POST /v1/completions: prompt text or token ids -> engine -> text or SSE chunks."""

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
from local_engine.server.logprobs import completion_logprobs, merge_completion_logprobs
from local_engine.server.protocol import CompletionRequest
from local_engine.server.request_mapping import completion_prompt_ids, sampling_params

__all__ = ["create_completion"]


async def create_completion(
    ctx: ServerContext, req: CompletionRequest, request: Request
) -> Response:
    prompt_ids = await ctx.off_loop(completion_prompt_ids, req, ctx.tokenizer, ctx.max_model_len)
    params = sampling_params(req, len(prompt_ids), ctx.max_model_len)
    request_id = f"cmpl-{uuid.uuid4().hex}"
    gen = await start_generation(ctx, request, request_id, prompt_ids, params)
    if req.stream:
        return StreamingResponse(_stream(ctx, req, gen, request_id), media_type="text/event-stream")
    try:
        text, logprobs, reason = await until_disconnect(request, _collect(ctx, req, gen))
    finally:
        await gen.close()
    choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason}
    head = completion_head(request_id, "text_completion", ctx.model_name)
    return JSONResponse({**head, "choices": [choice], "usage": gen.usage()})


async def _collect(
    ctx: ServerContext, req: CompletionRequest, gen: Generation
) -> tuple[str, dict | None, str | None]:
    pieces, logprob_parts, offset, reason = [], [], 0, None
    async for out in gen:
        if req.logprobs is not None and out.logprobs:
            logprob_parts.append(completion_logprobs(ctx.tokenizer, out.logprobs, offset))
        pieces.append(out.new_text)
        offset += len(out.new_text)
        reason = out.finish_reason
    return "".join(pieces), merge_completion_logprobs(logprob_parts), reason


async def _stream(
    ctx: ServerContext, req: CompletionRequest, gen: Generation, request_id: str
) -> AsyncIterator[bytes]:
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    base = completion_head(request_id, "text_completion", ctx.model_name)
    offset = 0
    try:
        async for out in gen:
            logprobs = None
            if req.logprobs is not None and out.logprobs:
                logprobs = completion_logprobs(ctx.tokenizer, out.logprobs, offset)
            offset += len(out.new_text)
            if out.new_text or logprobs or out.finished:
                choice = {
                    "index": 0,
                    "text": out.new_text,
                    "logprobs": logprobs,
                    "finish_reason": out.finish_reason if out.finished else None,
                }
                body = {**base, "choices": [choice]}
                if include_usage:
                    body["usage"] = None
                yield sse_event(body)
        if include_usage:
            yield sse_event({**base, "choices": [], "usage": gen.usage()})
        yield SSE_DONE
    except EngineError as exc:  # the headers went out: end the stream with an error event
        yield stream_error_event(exc)
    finally:
        await gen.close()
