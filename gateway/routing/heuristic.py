"""A transparent difficulty heuristic: the baseline scorer and the learned router's fallback.

Each signal adds a documented amount to a logit; the score is its logistic. Signals that
tend to separate "an open 7B-70B model does as well" from "a frontier model is needed":
long prompts, code, math and formal notation, explicit multi-step reasoning or proof
requests, many constraints, and long conversations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from gateway.routing.scorer import Messages, prompt_text

__all__ = ["HeuristicScorer", "WEIGHTS"]

# name: (pattern, logit added when present)
WEIGHTS: dict[str, tuple[re.Pattern[str], float]] = {
    "code": (
        re.compile(
            r"```|\bdef \w+\(|\bclass \w+[:(]|#include|\bfunction\s*\(|=>|\bSELECT\b.+\bFROM\b",
            re.S,
        ),
        0.6,
    ),
    "math": (
        re.compile(
            r"\\frac|\\sum|\\int|\$[^$]+\$|\b\d+\s*[\^*/]\s*\d+|\b(integral|derivative|equation|theorem|probability)\b",
            re.I,
        ),
        0.7,
    ),
    "proof": (re.compile(r"\b(prove|proof|derive|show that|formally|rigorous)\b", re.I), 0.8),
    "reasoning": (
        re.compile(
            r"\b(step[- ]by[- ]step|reason(ing)? about|analy[sz]e|trade-?offs?|compare and contrast|optimi[sz]e|design an?)\b",
            re.I,
        ),
        0.5,
    ),
    "constraints": (
        re.compile(r"\b(must|should not|exactly|at least|at most|without using|ensure)\b", re.I),
        0.15,
    ),
}
# Every alternative of WEIGHTS[name] contains one of KEYS[name] (case-folded): a cheap
# substring test rules most patterns out before the regex runs.
KEYS: dict[str, tuple[str, ...]] = {
    "code": ("```", "def ", "class ", "#include", "function", "=>", "select"),
    "math": (
        "\\frac",
        "\\sum",
        "\\int",
        "$",
        "^",
        "*",
        "/",
        "integral",
        "derivative",
        "equation",
        "theorem",
        "probability",
    ),
    "proof": ("prove", "proof", "derive", "show that", "formally", "rigorous"),
    "reasoning": ("step", "reason", "analy", "trade", "compare and contrast", "optimi", "design a"),
    "constraints": (
        "must",
        "should not",
        "exactly",
        "at least",
        "at most",
        "without using",
        "ensure",
    ),
}
BIAS = -1.6
LOG_LENGTH_WEIGHT = 0.45  # per natural-log unit of prompt characters above 200
TURN_WEIGHT = 0.08  # per message beyond the first two
MAX_CONSTRAINT_HITS = 5


class HeuristicScorer:
    name = "heuristic"

    def score(self, messages: Messages) -> float:
        text = prompt_text(messages)
        folded = text.casefold()
        z = BIAS + LOG_LENGTH_WEIGHT * max(0.0, math.log(max(len(text), 1) / 200.0))
        z += TURN_WEIGHT * max(0, len(messages) - 2)
        for name, (pattern, w) in WEIGHTS.items():
            if not any(k in folded for k in KEYS[name]):
                continue  # the pattern cannot match: skip the (slow) regex
            if name == "constraints":
                z += w * min(MAX_CONSTRAINT_HITS, len(pattern.findall(text)))
            elif pattern.search(text):
                z += w
        return 1.0 / (1.0 + math.exp(-z))

    def score_batch(self, batch: Sequence[Messages]) -> list[float]:
        return [self.score(m) for m in batch]
