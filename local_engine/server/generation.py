"""Drive one request through the AsyncLLMEngine: admission, disconnect handling, latency metrics.

A client that goes away aborts its request: streaming responses are cancelled by Starlette
when the client disconnects, non-streaming ones race the engine against ``http.disconnect``.
Either way the engine's iterator is closed, which aborts the request and frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from starlette.requests import Request

from local_engine.errors import ClientGoneError
from local_engine.sampling_params import SamplingParams
from local_engine.server.limits import ServerLimits
from local_engine.server.metrics import RequestTimer, ServerMetrics

__all__ = ["Generation", "ServerContext", "start_generation", "until_disconnect"]

T = TypeVar("T")
P = ParamSpec("P")


@dataclass(slots=True)
class ServerContext:
    engine: Any  # AsyncLLMEngine
    tokenizer: Any  # local_engine.tokenizer.Tokenizer
    model_name: str
    max_model_len: int
    metrics: ServerMetrics
    limits: ServerLimits
    cpu_pool: ThreadPoolExecutor  # chat templates and tokenization: never on the event loop

    async def off_loop(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.cpu_pool, functools.partial(fn, *args, **kwargs))


async def _wait_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(request: Request, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` unless the client disconnects first (then cancel it, raise ClientGoneError)."""
    work = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
    if work.cancelled():
        raise ClientGoneError("the client disconnected")
    return work.result()


class Generation:
    """One admitted request: iterate its RequestOutputs; ``close()`` aborts it if unfinished."""

    def __init__(self, outputs: AsyncIterator[Any], first: Any, timer: RequestTimer) -> None:
        self._outputs = outputs
        self._first: Any | None = first
        self._timer = timer
        self.prompt_tokens = first.num_prompt_tokens
        self.completion_tokens = 0
        self.cached_tokens = first.num_cached_tokens

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> Any:
        if self._first is not None:
            out, self._first = self._first, None
        else:
            out = await anext(self._outputs)  # StopAsyncIteration ends the loop
        self._timer.on_tokens(len(out.new_token_ids))
        self.completion_tokens = out.num_completion_tokens
        self.cached_tokens = out.num_cached_tokens
        if out.finished:
            self._timer.on_finish(out.finish_reason)
        return out

    async def close(self) -> None:
        aclose = getattr(self._outputs, "aclose", None)
        if aclose is not None:
            await aclose()

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


async def start_generation(
    ctx: ServerContext,
    request: Request,
    request_id: str,
    prompt_ids: list[int],
    params: SamplingParams,
) -> Generation:
    """Admit the request and wait for its first output (so a full queue is a 503, not a broken
    stream). Raises QueueFullError, RequestValidationError or ClientGoneError."""
    timer = ctx.metrics.timer()
    outputs = ctx.engine.generate(request_id, prompt_ids, params)  # may raise QueueFullError
    try:
        first = await until_disconnect(request, anext(outputs))
    except BaseException:
        aclose = getattr(outputs, "aclose", None)
        if aclose is not None:
            await aclose()
        raise
    generation = Generation(outputs, first, timer)
    return generation
