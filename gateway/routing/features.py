"""What the router knows about a request: read from the validated ``Request``, no second walk."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.protocols.request import EMPTY, Request

__all__ = ["RequestFeatures", "extract_features"]


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


def extract_features(
    req: Request,
    *,
    team: str = "default",
    key_name: str | None = None,
    headers: Mapping[str, str] = EMPTY,
) -> RequestFeatures:
    """The routing view of a validated request (see ``gateway.server.validate``)."""
    return RequestFeatures(
        operation=req.operation,
        virtual_model=req.model,
        needs=req.needs,
        prompt_tokens=req.prompt_tokens,
        max_output_tokens=req.max_output_tokens,
        stream=req.stream,
        team=team,
        key_name=key_name,
        headers=headers,
        metadata=req.metadata,
    )
