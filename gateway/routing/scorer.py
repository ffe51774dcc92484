"""Difficulty scorers: how likely is it that the self-hosted model's answer is clearly worse?

A scorer maps a chat request's messages to a number in [0, 1]; higher means "needs the strong
model more". Rules in the policy compare it to a threshold. Scorers are pluggable: the policy
names one by ``kind`` and the registry builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

Messages = Sequence[dict[str, Any]]


@runtime_checkable
class DifficultyScorer(Protocol):
    """The contract every scorer meets. ``score`` runs in the request path (keep it cheap);
    ``score_batch`` is for offline use (calibration, `gateway router score`)."""

    name: str

    def score(self, messages: Messages) -> float: ...

    def score_batch(self, batch: Sequence[Messages]) -> list[float]: ...


def prompt_text(messages: Messages) -> str:
    """The text a scorer reads: user turns' text parts, last turn last (images are skipped)."""
    parts: list[str] = []
    for m in messages:
        if m.get("role") not in ("user", "system"):
            continue
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                p.get("text", "")
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
    return "\n".join(parts)
