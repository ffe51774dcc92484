"""The contract every backend adapter meets, and the values that cross it.

A backend is one (endpoint, model) pair from the policy. Adapters translate nothing they do
not have to: an OpenAI-compatible upstream gets the client's body with only ``model``
replaced; litellm-backed providers get a translated call. Every adapter answers in
OpenAI's wire format, so the pipeline above never sees a provider's dialect.

Failures are raised as ``gateway.errors.UpstreamError`` (or a subclass) with
``upstream_status`` set when the upstream answered; the pipeline decides on retries,
fallbacks and the circuit breaker. Adapters never retry on their own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

Operation = Literal["chat", "completions", "embeddings"]


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

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


@dataclass(slots=True)
class UpstreamResponse:
    """A whole (non-streamed) OpenAI-format answer."""

    body: bytes  # OpenAI-format JSON, ready to send to the client
    model: str  # the model that actually answered
    usage: Usage | None = None
    status: int = 200


class UpstreamStream(ABC):
    """An open streamed answer. Opening it (``Backend.open_stream``) waits for the upstream's
    status line and first event, so a failure before the first byte raises there and the
    pipeline can fall back; iterating yields OpenAI SSE events (``b"data: {...}\\n\\n"``)
    ending with ``b"data: [DONE]\\n\\n"``. A failure mid-stream raises ``UpstreamError``
    from the iterator. After the end, ``usage`` holds the upstream's usage if it sent one.
    """

    model: str
    usage: Usage | None = None

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

    @abstractmethod
    async def complete(self, request: UpstreamRequest) -> UpstreamResponse:
        """Non-streamed chat completion, text completion or embeddings (by ``request.operation``)."""

    @abstractmethod
    async def open_stream(self, request: UpstreamRequest) -> UpstreamStream:
        """Streamed chat or text completion; see ``UpstreamStream``."""

    @abstractmethod
    async def probe(self) -> bool:
        """Cheap reachability check for ``/ready`` (e.g. GET /models); never raises."""

    @abstractmethod
    async def close(self) -> None: ...
