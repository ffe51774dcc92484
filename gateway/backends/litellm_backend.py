"""Providers that need translation (Anthropic Messages, Gemini, Bedrock, ...) through litellm.

litellm is imported on first use (it takes seconds), with its local model map forced
(``LITELLM_LOCAL_MODEL_COST_MAP``) so nothing reaches the internet but the configured
api_base, its callbacks and telemetry off, and its own retries disabled: the gateway retries.
Answers go out in OpenAI's wire format (``litellm_format``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway.backends.base import Backend, UpstreamRequest, UpstreamResponse, UpstreamStream, Usage
from gateway.backends.litellm_format import (
    chat_body,
    chunk_event,
    completion_body,
    embedding_body,
    map_exception,
    usage_dict,
    usage_of,
)
from gateway.backends.native import endpoints_for
from gateway.backends.pricing import resolve_capabilities
from gateway.config.schema import BackendConfig
from gateway.errors import UpstreamError
from gateway.sse import DONE, data_event, json_of

log = logging.getLogger("gateway.backends.litellm")

__all__ = ["LiteLLMBackend", "LiteLLMStream", "load_litellm", "CHAT_PARAMS"]

# OpenAI parameters handed to litellm; the rest (metadata, unknown fields) stays in the gateway.
# ``drop_params`` makes litellm drop the ones a provider does not support (e.g. seed on Anthropic).
CHAT_PARAMS = frozenset(
    {
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "stop",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "seed",
        "user",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "reasoning_effort",
    }
)
COMPLETION_PARAMS = frozenset(
    {
        "prompt",
        "suffix",
        "stop",
        "temperature",
        "top_p",
        "max_tokens",
        "seed",
        "user",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "echo",
        "best_of",
    }
)
PROBE_TIMEOUT_S = 2.0
EMBEDDING_PARAMS = frozenset({"input", "dimensions", "encoding_format", "user"})
PARAMS = {"chat": CHAT_PARAMS, "completions": COMPLETION_PARAMS, "embeddings": EMBEDDING_PARAMS}


@lru_cache(maxsize=1)
def load_litellm() -> Any:
    """Import and quiet litellm once: local price map, no callbacks, no debug banners."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners on stdout
    litellm.telemetry = False
    litellm.turn_off_message_logging = True
    litellm.success_callback = []
    litellm.failure_callback = []
    litellm.callbacks = []
    logging.getLogger("LiteLLM").setLevel(logging.WARNING)
    _warm_stream_types()
    return litellm


def _warm_stream_types() -> None:
    """Build litellm's lazily built stream-chunk models once, quietly.

    Their first construction makes pydantic warn that a litellm TypedDict uses ``ReadOnly``
    (harmless, litellm's own typing); doing it here keeps that out of request handling.
    """
    import warnings

    from litellm.types.utils import Delta, ModelResponse, ModelResponseStream, StreamingChoices

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*ReadOnly.*", category=UserWarning)
        ModelResponseStream(choices=[StreamingChoices(delta=Delta(content=""))])
        ModelResponse()


class LiteLLMBackend(Backend):
    kind = "litellm"

    def __init__(self, name: str, cfg: BackendConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.model = cfg.model
        self.self_hosted = cfg.self_hosted
        self._secret = cfg.api_key.get_secret_value() if cfg.api_key is not None else None
        self._litellm = load_litellm()
        import openai  # litellm's dependency; its exceptions derive from openai's

        self._errors: type[Exception] = openai.OpenAIError
        common: dict[str, Any] = {"model": cfg.model, "num_retries": 0, "drop_params": True}
        if self._secret:
            common["api_key"] = self._secret
        if cfg.base_url:
            common["api_base"] = cfg.base_url
        if cfg.headers:
            common["extra_headers"] = dict(cfg.headers)
        self._common = common
        # Anthropic callers' Messages bodies go to Anthropic's API as sent, not through litellm
        self._natives = endpoints_for(name, cfg, self._secret)
        self.native = frozenset(self._natives)
        self.native_reasoning = resolve_capabilities(cfg).reasoning is not False

    def _kwargs(self, request: UpstreamRequest) -> dict[str, Any]:
        body = request.body
        allowed = PARAMS[request.operation]
        kw = {k: v for k, v in body.items() if k in allowed and v is not None}
        kw.update(self._common)
        kw["timeout"] = request.timeout_s or self.cfg.timeout_s
        if request.headers:
            kw["extra_headers"] = {**kw.get("extra_headers", {}), **request.headers}
        if request.operation == "chat" and body.get("tools"):
            # litellm routes tool lists through its MCP gateway unless told not to (and that
            # path needs the optional `mcp` package); plain function tools never need it.
            kw["_skip_mcp_handler"] = True
        return kw

    async def count_tokens(self, request: UpstreamRequest) -> bytes:
        ep = self._natives.get(request.protocol)
        if ep is None:
            return await super().count_tokens(request)
        return await ep.count_tokens(request)

    async def complete(self, request: UpstreamRequest) -> UpstreamResponse:
        if request.protocol != "openai":
            return await self._natives[request.protocol].complete(request)
        ll = self._litellm
        kw = self._kwargs(request)
        call, shape = {
            "chat": (ll.acompletion, chat_body),
            "completions": (ll.atext_completion, completion_body),
            "embeddings": (ll.aembedding, embedding_body),
        }[request.operation]
        try:
            resp = await call(**kw)
        except self._errors as exc:  # litellm's exceptions all derive from openai's
            raise map_exception(self.name, exc, self._secret) from exc
        body = shape(resp, self.model)
        return UpstreamResponse(body=orjson.dumps(body), model=body["model"], usage=usage_of(resp))

    async def open_stream(self, request: UpstreamRequest) -> UpstreamStream:
        if request.protocol != "openai":
            return await self._natives[request.protocol].open_stream(request)
        if request.operation != "chat":
            raise UpstreamError(
                f"backend {self.name!r}: streaming is supported for chat completions only",
                upstream_status=400,
            )
        ll = self._litellm
        kw = self._kwargs(request)
        kw["stream"] = True
        kw["stream_options"] = {"include_usage": True}  # always: cost needs usage
        client_usage = bool((request.body.get("stream_options") or {}).get("include_usage"))
        try:
            wrapper = await ll.acompletion(**kw)
        except self._errors as exc:
            raise map_exception(self.name, exc, self._secret) from exc
        stream = LiteLLMStream(self, wrapper, client_usage)
        await stream.prime()
        return stream

    async def probe(self) -> bool:
        """A TCP connect to the configured api_base; with none (the provider's public
        endpoint) there is no free check, and a configured backend counts as up."""
        if not self.cfg.base_url:
            return True
        url = urlsplit(self.cfg.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(url.hostname, port), PROBE_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    async def close(self) -> None:
        for ep in self._natives.values():
            await ep.close()


class LiteLLMStream(UpstreamStream):
    """litellm's chunks as OpenAI ``chat.completion.chunk`` SSE events, then [DONE]."""

    def __init__(self, backend: LiteLLMBackend, wrapper: Any, client_usage: bool) -> None:
        self.model = backend.model
        self.usage = None
        self._backend = backend
        self._wrapper = wrapper
        self._it = wrapper.__aiter__()
        self._client_usage = client_usage
        self._first: bytes | None = None
        self._last_head: dict[str, Any] = {}

    async def _next_event(self) -> bytes | None:
        """The next event worth sending; None at the end. Usage is captured on the way."""
        errors = self._backend._errors
        while True:
            try:
                chunk = await self._it.__anext__()
            except StopAsyncIteration:
                return None
            except errors as exc:
                raise map_exception(self._backend.name, exc, self._backend._secret) from exc
            u = usage_of(chunk)
            if u is not None and (u.prompt_tokens or u.completion_tokens):
                self.usage = u
            self._last_head = {
                "id": getattr(chunk, "id", None),
                "created": getattr(chunk, "created", None),
            }
            event = chunk_event(chunk, self.model)
            if event is not None:
                return event

    async def prime(self) -> None:
        try:
            self._first = await self._next_event()
        except BaseException:
            await self.aclose()
            raise
        if self._first is None:
            await self.aclose()
            raise UpstreamError(
                f"backend {self._backend.name!r} closed the stream before the first event"
            )
        first = json_of(self._first)
        model = first.get("model") if isinstance(first, dict) else None
        if isinstance(model, str):
            self.model = model

    def _usage_event(self, u: Usage) -> bytes:
        out = {
            **self._last_head,
            "object": "chat.completion.chunk",
            "model": self.model,
            "choices": [],
            "usage": usage_dict(u),
        }
        return data_event(out)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        first, self._first = self._first, None
        if first is not None:
            yield first
        while True:
            event = await self._next_event()
            if event is None:
                break
            yield event
        if self._client_usage and self.usage is not None:
            yield self._usage_event(self.usage)
        yield DONE

    async def aclose(self) -> None:
        close = getattr(self._wrapper, "aclose", None)
        if close is not None:
            await close()
