"""What the router knows about a request: extracted once, cheaply, from the parsed body."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.routing.tokens import estimate_prompt_tokens

__all__ = ["RequestFeatures", "extract_features"]

from types import MappingProxyType

EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(slots=True)
class RequestFeatures:
    operation: str  # chat | completions | embeddings
    virtual_model: str
    needs: frozenset[str] = frozenset()  # vision, tools, json_schema, json_object
    prompt_tokens: int = 0  # estimate; see gateway.routing.tokens
    max_output_tokens: int = 0  # what the client asked for (0: unspecified)
    stream: bool = False
    team: str = "default"
    key_name: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    metadata: Mapping[str, Any] = field(default_factory=dict)
    difficulty: float | None = None  # filled only when a rule of the model needs it
    difficulty_threshold: float = 0.5  # where "hard" starts for this model right now
    self_hosted_only: bool = False  # forced from outside the rules (e.g. a team over budget)
    exact_tokens: dict[str, int] = field(default_factory=dict)  # backend -> count by its tokenizer


def _needs(body: dict[str, Any]) -> frozenset[str]:
    needs: set[str] = set()
    if body.get("tools") or body.get("functions"):
        needs.add("tools")
    rf = body.get("response_format")
    if isinstance(rf, dict):
        t = rf.get("type")
        if t == "json_schema":
            needs.add("json_schema")
        elif t == "json_object":
            needs.add("json_object")
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in (
                    "image_url",
                    "input_image",
                    "image",
                ):
                    needs.add("vision")
                    break
    return frozenset(needs)


def extract_features(
    operation: str,
    body: dict[str, Any],
    *,
    team: str = "default",
    key_name: str | None = None,
    headers: Mapping[str, str] = EMPTY,
) -> RequestFeatures:
    max_out = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    metadata = body.get("metadata")
    return RequestFeatures(
        operation=operation,
        virtual_model=body.get("model", ""),
        needs=_needs(body) if operation == "chat" else frozenset(),
        prompt_tokens=estimate_prompt_tokens(operation, body),
        max_output_tokens=max_out if isinstance(max_out, int) else 0,
        stream=bool(body.get("stream")),
        team=team,
        key_name=key_name,
        headers=headers,
        metadata=metadata if isinstance(metadata, dict) else EMPTY,
    )
