"""Shadow records as router labels: the adapter between gateway.shadow and the trainer.

- training: a judged record with its prompt text becomes one line of the training JSONL
  format (``gateway.router.dataset``): ``{"prompt": messages, "label": 1 if the self-hosted
  answer lost else 0, "source": "shadow:<virtual model>"}``;
- evaluation: each judged record gives the self-hosted ("weak") and reference ("strong")
  quality on one scale (single mode: grade / 10; pairwise: each side's share of the two
  position-swapped verdicts), which is what RouteLLM's metrics need;
- a fixed hold-out: a record is held back when the first 8 hex digits of its prompt's hash
  fall in the lowest ``share`` of the range, so ``train`` never sees what ``evaluate`` tests
  and the same prompt is never on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.shadow.records import ShadowRecord

__all__ = [
    "DEFAULT_HOLDOUT",
    "held_back",
    "judged",
    "prompt_features",
    "qualities",
    "split",
    "training_lines",
]

DEFAULT_HOLDOUT = 0.2


def prompt_features(messages: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The router's cheap, text-free features of a prompt (kept when prompt text is not)."""
    from gateway.router.features import FEATURE_NAMES, message_features

    return {
        n: round(float(v), 6)
        for n, v in zip(FEATURE_NAMES, message_features(messages), strict=True)
    }


def judged(records: Sequence[ShadowRecord]) -> list[ShadowRecord]:
    """Records with an outcome (a reference answer and a parsed verdict)."""
    return [r for r in records if r.outcome is not None and r.reference_score is not None]


def held_back(record: ShadowRecord, share: float) -> bool:
    h = record.prompt_sha256[:8]
    return bool(h) and int(h, 16) < share * 0x1_0000_0000


def split(
    records: Sequence[ShadowRecord], share: float
) -> tuple[list[ShadowRecord], list[ShadowRecord]]:
    """(train, held back)."""
    train: list[ShadowRecord] = []
    test: list[ShadowRecord] = []
    for r in records:
        (test if held_back(r, share) else train).append(r)
    return train, test


def training_lines(records: Sequence[ShadowRecord]) -> list[dict[str, Any]]:
    """Training-format lines of the judged records that carry prompt text."""
    return [
        {"prompt": r.prompt, "label": r.label, "source": f"shadow:{r.virtual_model}"}
        for r in judged(records)
        if r.prompt
    ]


def qualities(record: ShadowRecord) -> tuple[float, float]:
    """(self-hosted, reference) quality in [0, 1] for RouteLLM's metrics."""
    if record.judge_mode == "single":
        return (record.local_score or 0.0) / 10.0, (record.reference_score or 0.0) / 10.0
    return record.local_score or 0.0, record.reference_score or 0.0
