"""HTTP handlers for the Anthropic Messages and OpenAI Responses endpoints.

``POST /v1/messages`` and ``POST /v1/responses`` go through the one pipeline with their
codec; the rest here needs no backend: token counting and the stored responses.
"""

from __future__ import annotations

import orjson

from gateway.errors import InvalidRequestError, NotFoundError
from gateway.protocols import anthropic
from gateway.protocols.codecs import ANTHROPIC, ResponsesCodec, response_key
from gateway.server.http import header_map, read_body, send_bytes
from gateway.server.pipeline import Pipeline
from gateway.server.validate import parse_json, validate

__all__ = ["ProtocolRoutes"]

RESPONSES_PREFIX = "/v1/responses/"


class ProtocolRoutes:
    def __init__(self, pipeline: Pipeline, responses: ResponsesCodec) -> None:
        self.pipeline = pipeline
        self.responses = responses

    async def messages(self, scope, receive, send) -> None:
        await self.pipeline.handle("chat", scope, receive, send, ANTHROPIC)

    async def responses_create(self, scope, receive, send) -> None:
        await self.pipeline.handle("chat", scope, receive, send, self.responses)

    async def count_tokens(self, scope, receive, send) -> None:
        """Anthropic's token count, by the gateway's documented estimate (no backend call)."""
        rt = self.pipeline.store.runtime
        headers = header_map(scope)
        raw = await read_body(
            receive, rt.policy.server.max_body_bytes, headers.get("content-length")
        )
        rt.keys.authenticate(headers)
        body = parse_json(raw)
        if not isinstance(body.get("max_tokens"), int):  # count_tokens does not need it
            body = {**body, "max_tokens": 1}
        req = validate("chat", anthropic.to_chat(body))
        await send_bytes(send, 200, orjson.dumps({"input_tokens": req.prompt_tokens}))

    async def stored(self, scope, send, rid: str) -> None:
        """GET or DELETE /v1/responses/{id}, within the caller's team."""
        rt = self.pipeline.store.runtime
        caller = rt.keys.authenticate(header_map(scope))
        if not rid or "/" in rid:
            raise InvalidRequestError("expected /v1/responses/{response_id}", param="response_id")
        if scope["method"] == "DELETE":
            gone = await self.responses.state.delete_blob(response_key(caller.team, rid))
            if not gone:
                raise _not_found(rid)
            doc = {"id": rid, "object": "response", "deleted": True}
            await send_bytes(send, 200, orjson.dumps(doc))
            return
        stored = await self.responses.load(caller.team, rid)
        if stored is None:
            raise _not_found(rid)
        await send_bytes(send, 200, orjson.dumps(stored["response"]))


def _not_found(rid: str) -> NotFoundError:
    return NotFoundError(f"response {rid!r} not found", param="response_id", code="not_found")
