"""Per-request sampling settings, validated once when the request arrives.

Every field is range-checked here, so nothing that reaches the step thread can overflow a
tensor or turn the logits into NaN: floats must be finite, integers fit the int64 tensors the
sampler builds, and list sizes are bounded (stop strings are checked on every step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["SamplingParams"]

DEFAULT_MAX_TOKENS = 256
MAX_TOP_LOGPROBS = 20
MAX_TEMPERATURE = 2.0  # OpenAI's range is [0, 2]
GREEDY_BELOW = 1e-5  # temperatures this small sample like 0 (1 / t would overflow fp32 logits)
MIN_REPETITION_PENALTY = 0.01  # logits are divided/multiplied by it in fp32
MAX_REPETITION_PENALTY = 100.0
MAX_TOP_K = 2**31 - 1  # larger would overflow the sampler's index tensors; >= vocab means off
MAX_STOP_STRINGS = 16
MAX_STOP_STRING_CHARS = 1024
MAX_STOP_TOKEN_IDS = 1024
MAX_LOGIT_BIAS = 1024  # entries
LOGIT_BIAS_RANGE = 100.0  # OpenAI: each bias in [-100, 100]
SEED_RANGE = (-(2**63), 2**64 - 1)  # int64 or uint64, as clients send them


def _finite(name: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value!r}")


@dataclass(slots=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: off
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    max_tokens: int = DEFAULT_MAX_TOKENS
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit

    def __post_init__(self) -> None:
        _finite("temperature", self.temperature, 0.0, MAX_TEMPERATURE)
        if self.temperature < GREEDY_BELOW:
            self.temperature = 0.0
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k == 0 or not -1 <= self.top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be -1 (off) or in [1, {MAX_TOP_K}], got {self.top_k}")
        _finite("min_p", self.min_p, 0.0, 1.0)
        _finite("presence_penalty", self.presence_penalty, -2.0, 2.0)
        _finite("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        _finite(
            "repetition_penalty",
            self.repetition_penalty,
            MIN_REPETITION_PENALTY,
            MAX_REPETITION_PENALTY,
        )
        if self.seed is not None and not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise ValueError("seed must fit in 64 bits")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}]")
        if len(self.stop) > MAX_STOP_STRINGS or any(
            len(s) > MAX_STOP_STRING_CHARS for s in self.stop
        ):
            raise ValueError(
                f"stop takes at most {MAX_STOP_STRINGS} strings of at most "
                f"{MAX_STOP_STRING_CHARS} characters"
            )
        if len(self.stop_token_ids) > MAX_STOP_TOKEN_IDS:
            raise ValueError(f"stop_token_ids takes at most {MAX_STOP_TOKEN_IDS} ids")
        if len(self.logit_bias) > MAX_LOGIT_BIAS:
            raise ValueError(f"logit_bias takes at most {MAX_LOGIT_BIAS} entries")
        for bias in self.logit_bias.values():
            _finite("logit_bias", bias, -LOGIT_BIAS_RANGE, LOGIT_BIAS_RANGE)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
