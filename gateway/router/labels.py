"""What the trainer learns from: prompts with one or more observed outcomes.

Every label kind becomes the same thing, an ``Observation(arm, y)``: ``y`` in [0, 1] is the
probability that the answer of ``arm`` (one model, or "the self-hosted model vs the strong
one") was not good enough on this prompt. The trainer fits one difficulty per prompt from its
features and one offset per (source, arm), so sources with different label kinds and
different models share the difficulty and keep their own base rates:

    weak-vs-strong label     arm "needs_strong"              y = label
    per-model outcomes       arm "fails:<model>"             y = 1 - outcome
    judge preference         arm "loses_to_strong:<model>"   y = P(strong answer preferred)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Observation", "LabelledPrompt"]


@dataclass(frozen=True, slots=True)
class Observation:
    arm: str
    y: float  # P(this arm's answer was not good enough), in [0, 1]


@dataclass(frozen=True, slots=True)
class LabelledPrompt:
    messages: list[dict[str, Any]]
    source: str  # a group (app, dataset): sources are balanced and keep their own offsets
    observations: tuple[Observation, ...]
    weight: float = 1.0
