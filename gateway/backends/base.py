"""The contract every backend adapter meets, and the values that cross it.

A backend is one (endpoint, model) pair from the policy. Adapters translate nothing they do
not have to: an OpenAI-compatible upstream gets the client's body with only ``model``
replaced; litellm-backed providers get a translated call. Every adapter answers in
OpenAI's wire format, so the pipeline above never sees a provider's dialect, with one
exception: a request whose ``protocol`` is one the backend takes natively (``Backend.native``:
an Anthropic caller's Messages body for an Anthropic backend, a Responses body for a server
that speaks Responses) goes up as the caller sent it and its answer comes back in that
protocol, untranslated (``gateway.backends.native``).

Failures are raised as ``gateway.errors.UpstreamError`` (or a subclass) with
``upstream_status`` set when the upstream answered; the pipeline decides on retries,
fallbacks and the circuit breaker. Adapters never retry on their own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from gateway.errors import NoBackendError, UpstreamError

Operation = Literal["chat", "completions", "embeddings"]
# "openai": the OpenAI wire format of ``operation``; otherwise a caller protocol sent natively
WireProtocol = Literal["openai", "anthropic", "responses"]


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0  # all of them, cached ones included
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens read from the upstream's prompt cache
    cache_write_tokens: int = 0  # prompt tokens written to it (Anthropic's cache_creation_*)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class UpstreamRequest:
    """What the pipeline hands an adapter.

    ``body`` is the client's parsed JSON (never mutated by adapters: copy before changing);
    ``raw`` is the client's original bytes, for the pass-through path; ``headers`` are
    extra headers to forward (request id, and nothing secret of the client's).
    """

    operation: Operation
    body: dict[str, Any]
    raw: bytes | None = None
    stream: bool = False
    timeout_s: float | None = None  # None: the backend's configured timeout
    headers: dict[str, str] = field(default_factory=dict)
    # A later candidate may take this request (it need not stay self-hosted): a full fleet
    # raises FleetSaturatedError instead of queueing it (spill-over).
    spill_ok: bool = False
    # The body's protocol: OpenAI's, or a caller's own (Anthropic Messages, Responses) for a
    # backend that takes it natively
    protocol: WireProtocol = "openai"
    # A native body asking the model to reason (Responses ``reasoning`` or reasoning items,
    # Anthropic ``thinking``): only for backends whose model reasons (``Backend.takes``)
    reasoning: bool = False

    def payload_for(self, model: str) -> bytes:
        """The body to send upstream with ``model`` in it: the client's own bytes when they
        already name it (the pass-through path), else the body re-encoded."""
        if self.raw is not None and self.body.get("model") == model:
            return self.raw
        return orjson.dumps({**self.body, "model": model})


@dataclass(slots=True)
class UpstreamResponse:
    """A whole (non-streamed) answer, in the request's protocol (OpenAI's unless native)."""

    body: bytes  # JSON, ready to send to the client
    model: str  # the model that actually answered
    usage: Usage | None = None
    status: int = 200
    protocol: WireProtocol = "openai"
    # ``body`` parsed, where the adapter parsed it anyway (None: not parsed); whoever changes
    # ``body`` drops it
    doc: dict[str, Any] | None = None


class UpstreamStream(ABC):
    """An open streamed answer. Opening it (``Backend.open_stream``) waits for the upstream's
    status line and first event, so a failure before the first byte raises there and the
    pipeline can fall back; iterating yields OpenAI SSE events (``b"data: {...}\\n\\n"``)
    ending with ``b"data: [DONE]\\n\\n"`` (a native stream: the caller's protocol's named
    events, ending with its last one). A failure mid-stream raises ``UpstreamError`` from the
    iterator. After the end, ``usage`` holds the upstream's usage if it sent one.
    """

    model: str
    usage: Usage | None = None
    protocol: WireProtocol = "openai"  # a native stream yields the caller's protocol's events
    answer: dict[str, Any] | None = None  # a native stream's final answer, where it sends one
    relayed: int = 0  # events a native stream yielded (one item may hold several)
    # The data of the event the iterator yielded last, set before every yield by a stream that
    # parses each event anyway (SSEStream validates them); None: not parsed, read the bytes.
    last_json: dict[str, Any] | None = None

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def aclose(self) -> None: ...


class Backend(ABC):
    """One configured upstream. ``name`` is the policy's key for it."""

    name: str
    kind: str
    model: str
    self_hosted: bool
    native: frozenset[str] = frozenset()  # caller protocols taken natively (see the module doc)
    # False: the model refuses reasoning parameters (capabilities.reasoning: false, e.g. from
    # litellm's map for gpt-4o), so a native body asking for reasoning is translated instead
    native_reasoning: bool = True

    def takes(self, request: UpstreamRequest) -> bool:
        """This native request can go to this backend as it is."""
        return request.protocol in self.native and (self.native_reasoning or not request.reasoning)

    @abstractmethod
    async def complete(self, request: UpstreamRequest) -> UpstreamResponse:
        """Non-streamed chat completion, text completion or embeddings (by ``request.operation``)."""

    @abstractmethod
    async def open_stream(self, request: UpstreamRequest) -> UpstreamStream:
        """Streamed chat or text completion; see ``UpstreamStream``."""

    async def count_tokens(self, request: UpstreamRequest) -> bytes:
        """The upstream's own prompt-token count of a native request (Anthropic's
        ``/v1/messages/count_tokens``: its JSON answer); raises ``UpstreamError`` where the
        backend has none or it fails."""
        raise UpstreamError(f"backend {self.name!r} counts no tokens for {request.protocol}")

    @abstractmethod
    async def probe(self) -> bool:
        """Cheap reachability check for ``/ready`` (e.g. GET /models); never raises."""

    @abstractmethod
    async def close(self) -> None: ...


@dataclass(slots=True)
class Upstreams:
    """What each candidate of a request is sent: the caller's own body (``native``) where the
    backend takes the caller's protocol natively, else the one OpenAI-format request (None: the
    caller's body has no chat form, so a backend that would need it is never sent anything)."""

    chat: UpstreamRequest | None
    native: UpstreamRequest | None = None

    def pick(self, backend: Backend) -> UpstreamRequest:
        n = self.native
        if n is not None and backend.takes(n):
            return n
        if self.chat is None:  # the pipeline keeps such backends out of the candidates
            raise NoBackendError(
                f"backend {backend.name!r} would need this request translated, and it has no"
                " chat form"
            )
        return self.chat
