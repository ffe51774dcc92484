"""One judged shadow sample, as stored (a JSONL line or a ``shadow_records`` row).

``outcome`` is the self-hosted answer's result against the reference: ``win``, ``tie`` or
``loss`` (None when there was no reference to compare with, or the judge failed). Scores:
single mode, the judge's 1-10 grade of each answer; pairwise mode, the self-hosted answer's
share of the two position-swapped verdicts (1, 0.5, 0) and the reference's complement.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import orjson

__all__ = ["Outcome", "ShadowRecord", "prompt_hash", "record_from_dict"]

Outcome = Literal["win", "tie", "loss"]
OUTCOMES: tuple[Outcome, ...] = ("win", "tie", "loss")


def prompt_hash(messages: Any) -> str:
    """SHA-256 of the request's messages in a canonical JSON form (sorted keys)."""
    return hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(slots=True)
class ShadowRecord:
    id: str
    time: float  # epoch seconds, when the original request was answered
    team: str
    key_name: str | None
    virtual_model: str
    rule: str
    difficulty: float | None  # the router's score at request time (None: no rule asked)
    local_backend: str
    reference_backend: str | None
    judge_backend: str | None
    judge_mode: str
    local_score: float | None = None
    reference_score: float | None = None
    outcome: Outcome | None = None
    judge_raw: list[str] = field(default_factory=list)  # the judge's replies, verbatim
    confidence: float | None = None  # the cascade's confidence of the local answer, if computed
    prompt_sha256: str = ""
    prompt: list[dict[str, Any]] | None = None  # only with shadow.store.prompts: true
    local_answer: str | None = None  # idem
    reference_answer: str | None = None  # idem
    features: dict[str, float] = field(default_factory=dict)  # router features (no text)
    # prompt_tokens / completion_tokens, and cached_tokens / cache_write_tokens when nonzero
    local_tokens: dict[str, int] = field(default_factory=dict)
    reference_tokens: dict[str, int] = field(default_factory=dict)
    judge_tokens: dict[str, int] = field(default_factory=dict)
    shadow_cost_usd: float = 0.0  # the reference and judge calls
    error: str | None = None  # why the sample has no outcome (judge unparsable, call failed)
    home: bool = False  # the request had to stay on self-hosted backends

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @property
    def label(self) -> float | None:
        """Router training target: 1 = the self-hosted answer lost (strong model needed)."""
        if self.outcome is None:
            return None
        return 1.0 if self.outcome == "loss" else 0.0


_FIELDS = {f.name for f in fields(ShadowRecord)}


def record_from_dict(obj: dict[str, Any]) -> ShadowRecord:
    """A record from its stored form; unknown keys (written by a newer gateway) are ignored."""
    return ShadowRecord(**{k: v for k, v in obj.items() if k in _FIELDS})
