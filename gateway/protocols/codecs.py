"""Protocol codecs: the pipeline's edges for callers that do not speak OpenAI chat.

A codec decodes a caller's body into the one internal ``Request`` (its ``body`` an OpenAI
chat body, validated by the same checks as ``/v1/chat/completions``), and encodes what the
backend answered (an OpenAI chat completion, or chat chunks) back into the caller's
protocol. Everything between (auth, policy, limits, routing, retries, cache, metrics,
spend) is the one pipeline. The OpenAI protocol has no codec: its bytes pass through.

A backend that speaks the caller's protocol itself (``Backend.native``) is sent what
``native_body`` says (the caller's own body) and its answer is relayed untranslated; the
codec then only supplies error shapes and, for Responses, keeps the stored conversation.

    Codec
    ├── AnthropicCodec   POST /v1/messages
    └── ResponsesCodec   POST /v1/responses (+ stored responses for previous_response_id)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from gateway.errors import GatewayError, NotFoundError, UntranslatableError
from gateway.protocols import anthropic, responses, untranslated
from gateway.protocols.request import Request
from gateway.server.validate import validate
from gateway.state import SharedState

__all__ = [
    "ANTHROPIC",
    "RESPONSES",
    "AnthropicCodec",
    "Codec",
    "RelayedStream",
    "ResponsesCodec",
    "StreamEncoder",
    "response_key",
]

DEFAULT_RESPONSE_TTL_S = 30 * 24 * 3600  # what OpenAI keeps stored responses for


class StreamEncoder(Protocol):
    def feed(self, chunk: dict[str, Any]) -> list[bytes]: ...

    def finish(self) -> list[bytes]: ...

    def error(self, exc: GatewayError) -> list[bytes]: ...


class Codec:
    protocol: str
    native_headers: tuple[str, ...] = ()  # the caller's headers a native backend gets too
    keeps_answers = False  # ``answered`` does something (a native answer is parsed for it)

    async def decode(self, body: dict[str, Any], raw: bytes, team: str) -> Request:
        raise NotImplementedError

    def whole(self, req: Request, doc: dict[str, Any]) -> dict[str, Any]:
        """The caller's answer from a chat completion (parsed)."""
        raise NotImplementedError

    def stream(self, req: Request) -> StreamEncoder:
        raise NotImplementedError

    def error_json(self, exc: GatewayError) -> bytes:
        return exc.to_json()

    async def answered(self, req: Request, answer: dict[str, Any], team: str) -> None:
        """Called with the caller's answer (whole, or the streamed one at its end), translated
        or relayed from a native backend."""

    def native_body(self, req: Request) -> tuple[dict[str, Any], bytes | None] | None:
        """(body, its bytes if unchanged) for a backend speaking the caller's protocol; None:
        this request cannot go natively (it is translated)."""
        if req.native is None:
            return None
        return req.native, req.native_raw

    def native_error(self, exc: GatewayError, relayed: int) -> bytes:
        """The error event that ends a stream relayed from a native backend after ``relayed``
        of its events."""
        raise NotImplementedError

    def reasons(self, body: dict[str, Any]) -> bool:
        """The native body asks the model to reason (a model that does not refuses it)."""
        return False


class RelayedStream:
    """The encoder of a stream relayed from a native backend: its events pass untouched, so
    the only event of the gateway's own is the error one, numbered after what was relayed."""

    __slots__ = ("_codec", "_relayed")

    def __init__(self, codec: Codec, relayed: Callable[[], int]) -> None:
        self._codec = codec
        self._relayed = relayed

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        return []

    def finish(self) -> list[bytes]:
        return []

    def error(self, exc: GatewayError) -> list[bytes]:
        return [self._codec.native_error(exc, self._relayed())]


def _request(protocol: str, chat: dict[str, Any], native: dict[str, Any], raw: bytes) -> Request:
    req = validate("chat", chat)
    req.protocol = protocol  # type: ignore[assignment]
    req.native, req.native_raw = native, raw
    metadata = native.get("metadata")
    req.metadata = metadata if isinstance(metadata, dict) else req.metadata
    return req


class AnthropicCodec(Codec):
    protocol = "anthropic"
    native_headers = ("anthropic-version", "anthropic-beta")  # betas: e.g. interleaved thinking

    async def decode(self, body: dict[str, Any], raw: bytes, team: str) -> Request:
        try:
            return _request(self.protocol, anthropic.to_chat(body), body, raw)
        except UntranslatableError as exc:  # well formed, no chat form: native backends only
            return untranslated.request("anthropic", body, raw, exc)

    def whole(self, req: Request, doc: dict[str, Any]) -> dict[str, Any]:
        return anthropic.to_message(doc, req.model)

    def stream(self, req: Request) -> StreamEncoder:
        return anthropic.AnthropicStream(req.model, req.prompt_tokens)

    def error_json(self, exc: GatewayError) -> bytes:
        return anthropic.error_json(exc)

    def native_error(self, exc: GatewayError, relayed: int) -> bytes:
        return anthropic.error_event(exc)

    def reasons(self, body: dict[str, Any]) -> bool:
        thinking = body.get("thinking")
        return isinstance(thinking, dict) and thinking.get("type") != "disabled"


def response_key(team: str, rid: str) -> str:
    """Stored responses are scoped to the caller's team: another team's id is not found."""
    return f"responses:{team}:{rid}"


class ResponsesCodec(Codec):
    """Responses over chat; ``store`` keeps each answer (and the conversation it ends) in the
    shared state, so ``previous_response_id`` and ``GET /v1/responses/{id}`` work on every
    replica."""

    protocol = "responses"
    keeps_answers = True

    def __init__(self, state: SharedState, ttl_s: int = DEFAULT_RESPONSE_TTL_S) -> None:
        self.state = state
        self.ttl_s = ttl_s

    async def load(self, team: str, rid: str) -> dict[str, Any] | None:
        blob = await self.state.get_blob(response_key(team, rid))
        return orjson.loads(blob) if blob is not None else None

    async def decode(self, body: dict[str, Any], raw: bytes, team: str) -> Request:
        history = None
        prev = body.get("previous_response_id")
        if prev is not None:
            stored = await self.load(team, prev) if isinstance(prev, str) else None
            if stored is None:
                raise NotFoundError(
                    f"previous response {prev!r} not found (expired, deleted or never stored)",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            history = stored.get("messages")
        items = stored.get("items") if prev is not None else None  # type: ignore[union-attr]
        try:
            chat = responses.to_chat(body, history)
            if prev is not None and history is None:
                raise UntranslatableError(
                    "previous_response_id: the stored conversation has no chat form (it was"
                    " answered natively from a body that has none)",
                    param="previous_response_id",
                )
            req = _request(self.protocol, chat, body, raw)
        except UntranslatableError as exc:  # well formed, no chat form: native backends only
            req = untranslated.request("responses", body, raw, exc, items)
        req.response_id = responses.new_id("resp")
        if prev is not None:
            req.native_history = items
        return req

    def native_body(self, req: Request) -> tuple[dict[str, Any], bytes | None] | None:
        """The caller's body; a stored conversation goes in front of ``input`` (the gateway,
        not the upstream, holds it: the next turn may go to another backend)."""
        body = req.native
        if body is None or "previous_response_id" not in body:
            return (body, req.native_raw) if body is not None else None
        if req.native_history is None:
            return None  # stored in chat form only (a gateway before native pass-through)
        rest = {k: v for k, v in body.items() if k != "previous_response_id"}
        rest["input"] = req.native_history + responses.input_items(body.get("input"))
        return rest, None

    def whole(self, req: Request, doc: dict[str, Any]) -> dict[str, Any]:
        return responses.to_response(doc, req.native or {}, req.response_id, req.model)

    def native_error(self, exc: GatewayError, relayed: int) -> bytes:
        return responses.error_event(exc, relayed)  # upstreams number their events from 0

    def reasons(self, body: dict[str, Any]) -> bool:
        """``reasoning``, encrypted reasoning asked back, or reasoning items in ``input`` (a
        conversation begun on a reasoning model)."""
        if body.get("reasoning") is not None:
            return True
        include = body.get("include")
        if isinstance(include, list) and "reasoning.encrypted_content" in include:
            return True
        items = body.get("input")
        return isinstance(items, list) and any(
            isinstance(it, dict) and it.get("type") == "reasoning" for it in items
        )

    def stream(self, req: Request) -> StreamEncoder:
        return responses.ResponsesStream(req.native or {}, req.response_id, req.model)

    async def answered(self, req: Request, answer: dict[str, Any], team: str) -> None:
        if not (req.native or {}).get("store", True):
            return
        native = req.native or {}
        record: dict[str, Any] = {"response": answer}
        if req.untranslatable is None:  # a conversation with no chat form is kept as items only
            record["messages"] = req.body["messages"] + responses.output_messages(answer)
        if native.get("previous_response_id") is None or req.native_history is not None:
            # the same conversation as Responses items, for a backend that takes them natively
            # (not for one continued from a record in chat form only: its items would lack the
            # start, so that conversation stays translated)
            record["items"] = (
                (req.native_history or [])
                + responses.input_items(native.get("input"))
                + responses.replay_items(answer)
            )
        rid = answer.get("id")  # a native answer's id is the upstream's
        rid = rid if isinstance(rid, str) else req.response_id
        await self.state.put_blob(response_key(team, rid), orjson.dumps(record), self.ttl_s)


ANTHROPIC = AnthropicCodec()
RESPONSES = ResponsesCodec  # built per app: it needs the shared state
