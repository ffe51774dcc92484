"""Confidence of an answer from its token log-probabilities.

confidence = the mean log-probability (nats) of the least likely ``quantile`` share of the
answer's tokens (at least one token). 0 means every token was certain; an answer with a
few near-random tokens scores low even when most of it is boilerplate, which a plain mean
would hide. Quantile 1.0 gives the plain mean; a small quantile approaches the minimum.

Both OpenAI shapes are read: chat ``choices[0].logprobs.content[*].logprob`` and legacy
completions ``choices[0].logprobs.token_logprobs``. No log-probs (the backend ignored the
request, or the answer is empty): ``None``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["answer_confidence", "low_quantile_mean", "token_logprobs"]


def token_logprobs(answer: dict[str, Any]) -> list[float] | None:
    """The chosen tokens' log-probs of the first choice, or None when the answer has none."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    lp = choices[0].get("logprobs")
    if not isinstance(lp, dict):
        return None
    content = lp.get("content")
    values: Any
    if isinstance(content, list):
        values = [e.get("logprob") for e in content if isinstance(e, dict)]
    else:
        values = lp.get("token_logprobs")
        if not isinstance(values, list):
            return None
    out = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return out or None


def low_quantile_mean(values: list[float], quantile: float) -> float:
    if not values:
        raise ValueError("no values")
    if not 0 < quantile <= 1:
        raise ValueError("quantile must be in (0, 1]")
    k = max(1, math.ceil(quantile * len(values)))
    return sum(sorted(values)[:k]) / k


def answer_confidence(answer: dict[str, Any], quantile: float) -> float | None:
    values = token_logprobs(answer)
    return None if values is None else low_quantile_mean(values, quantile)
