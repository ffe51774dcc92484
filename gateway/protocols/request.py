"""The internal request: parsed and checked once, read by every later stage.

``body`` is always an OpenAI-format body (chat, completions or embeddings): the form every
chat-speaking backend adapter sends. ``raw`` holds the client's bytes when they are exactly
``body`` (the pass-through path sends them unchanged). For callers that speak another
protocol, ``native`` keeps their own body so a backend speaking that protocol gets it as sent.
A caller's body that chat completions cannot carry (``untranslatable`` says which part) has no
OpenAI form: its ``body`` then holds only its text as chat messages, for the difficulty scorer
and token counts, and is never sent (only backends taking ``native`` natively may serve it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from gateway.errors import UntranslatableError

__all__ = ["EMPTY", "Operation", "Protocol", "Request"]

Operation = Literal["chat", "completions", "embeddings"]
# openai: chat/text completions and embeddings; anthropic: Messages; responses: OpenAI Responses
Protocol = Literal["openai", "anthropic", "responses"]

EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(slots=True)
class Request:
    operation: Operation
    model: str  # the virtual model asked for
    body: dict[str, Any]  # OpenAI-format body
    raw: bytes | None = None  # the client's bytes, when they are exactly ``body``
    protocol: Protocol = "openai"
    native: dict[str, Any] | None = None  # the caller's own body (protocol != "openai")
    native_raw: bytes | None = None
    # Responses API: the stored conversation ``previous_response_id`` names, as Responses items
    # (what a backend taking Responses natively gets in front of ``input``); None: no such
    # conversation, or one stored in chat form only
    native_history: list[dict[str, Any]] | None = None
    response_id: str = ""  # Responses API: the id of the answer being made
    untranslatable: UntranslatableError | None = None  # ``native`` has no chat form: why
    stream: bool = False
    include_usage: bool = False  # the client asked for a usage chunk in its stream
    max_output_tokens: int = 0  # 0: unspecified
    prompt_tokens: int = 0  # estimate; see gateway.routing.tokens
    images: int = 0
    needs: frozenset[str] = frozenset()  # vision, tools, json_schema, json_object
    metadata: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    # What the cache decision reads
    n: int | None = None
    seed: Any = None
    temperature: Any = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Chat messages (what the difficulty scorer reads); empty for other operations."""
        return self.body.get("messages") or [] if self.operation == "chat" else []
