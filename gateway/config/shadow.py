"""Policy schema of shadow evaluation (``shadow:``) and of the confidence cascade (a rule's
``cascade:``).

Global ``shadow:`` holds where records go, the background queue and the daily cap; its
sampling fields are the defaults that a virtual model's own ``shadow:`` overrides field by
field::

    shadow:
      sample_rate: 0.05
      daily_cap_usd: 5
      reference: openai            # re-asked with the same request
      judge: openai                # compares the two answers
      judge_mode: pairwise         # or single (1-10 grade of each answer)
      home_judge: local            # optional self-hosted judge for data that must stay home
      exclude_rules: [confidential-stays-home]
      store: {jsonl: /var/lib/gateway/shadow.jsonl, retention_days: 30, prompts: false}
    models:
      auto:
        shadow: {sample_rate: 0.2}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from gateway.config.base import Strict, resolve_env

__all__ = [
    "CascadeConfig",
    "ShadowModelConfig",
    "ShadowPolicy",
    "ShadowSampling",
    "ShadowStoreConfig",
]

DEFAULT_SAMPLE_RATE = 0.05
DEFAULT_DAILY_CAP_USD = 5.0
DEFAULT_QUEUE_SIZE = 256
DEFAULT_WORKERS = 2
DEFAULT_RETENTION_DAYS = 30
DEFAULT_SHADOW_TIMEOUT_S = 120.0
DEFAULT_MIN_CONFIDENCE = -1.0  # mean log-prob of the lowest 10% of tokens; see gateway.cascade
DEFAULT_CASCADE_QUANTILE = 0.1

JudgeMode = Literal["single", "pairwise"]


class ShadowSampling(Strict):
    """What is sampled and who answers and judges it. Every field may be set per virtual model."""

    enabled: bool = True
    sample_rate: float = Field(DEFAULT_SAMPLE_RATE, ge=0, le=1)
    reference: str | None = None  # backend re-asked with the same request
    judge: str | None = None  # backend asked to compare the answers
    judge_mode: JudgeMode = "pairwise"
    tie_margin: float = Field(0.0, ge=0, le=9)  # single mode: |score gap| <= margin is a tie
    # Requests whose rules keep them home never reach a proprietary reference or judge. With a
    # self-hosted home_judge their local answer is still graded (single mode), alone or against
    # a self-hosted home_reference (a bigger in-house model).
    home_judge: str | None = None
    home_reference: str | None = None
    teams: list[str] | None = None  # None: every team
    exclude_teams: list[str] = []
    rules: list[str] | None = None  # None: every rule
    exclude_rules: list[str] = []
    min_quality_kept: float = Field(0.8, ge=0, le=1)  # alert below this share of non-losses


class ShadowModelConfig(Strict):
    """A virtual model's ``shadow:``: any sampling field; unset ones come from the global one."""

    enabled: bool | None = None
    sample_rate: float | None = Field(None, ge=0, le=1)
    reference: str | None = None
    judge: str | None = None
    judge_mode: JudgeMode | None = None
    tie_margin: float | None = Field(None, ge=0, le=9)
    home_judge: str | None = None
    home_reference: str | None = None
    teams: list[str] | None = None
    exclude_teams: list[str] | None = None
    rules: list[str] | None = None
    exclude_rules: list[str] | None = None
    min_quality_kept: float | None = Field(None, ge=0, le=1)

    def over(self, base: ShadowSampling) -> ShadowSampling:
        given = {k: v for k, v in self.model_dump(exclude_unset=True).items() if v is not None}
        return base.model_copy(update=given)


class ShadowStoreConfig(Strict):
    """Where judged records go: PostgreSQL (table ``shadow_records``) when ``postgres_dsn`` is
    set, else a JSONL file."""

    postgres_dsn: str | None = None
    jsonl: str | None = None
    retention_days: int = Field(DEFAULT_RETENTION_DAYS, ge=1)
    # Store prompt and answer text (needed to retrain the router on these records). Off: a
    # SHA-256 of the prompt and the router's cheap features only.
    prompts: bool = False

    @field_validator("postgres_dsn", "jsonl", mode="before")
    @classmethod
    def _env(cls, v: Any, info: ValidationInfo) -> Any:
        return resolve_env(v, info) if isinstance(v, str) else v


class ShadowPolicy(ShadowSampling):
    """The global ``shadow:`` section."""

    daily_cap_usd: float = Field(DEFAULT_DAILY_CAP_USD, ge=0)  # across replicas (shared state)
    queue_size: int = Field(DEFAULT_QUEUE_SIZE, ge=1)  # full: samples are dropped and counted
    workers: int = Field(DEFAULT_WORKERS, ge=1, le=64)
    timeout_s: float = Field(DEFAULT_SHADOW_TIMEOUT_S, gt=0)  # one sample, all its calls
    store: ShadowStoreConfig = ShadowStoreConfig()

    def sampling(self) -> ShadowSampling:
        return ShadowSampling.model_validate(
            {k: getattr(self, k) for k in ShadowSampling.model_fields}
        )


class CascadeConfig(Strict):
    """A rule's ``cascade:``: ask the self-hosted candidate first (with token log-probs) and
    escalate to the next candidate when the answer's confidence is below ``min_confidence``.

    Confidence: the mean of the lowest ``quantile`` share of the answer's token log-probs
    (at least one token), in nats; 0 = every token certain. Streams are not cascaded
    (see the README): they go to the rule's candidates as usual."""

    min_confidence: float = Field(DEFAULT_MIN_CONFIDENCE, le=0)
    quantile: float = Field(DEFAULT_CASCADE_QUANTILE, gt=0, le=1)
    # The backend sent no log-probs (or an empty answer): no signal, so by default escalate.
    on_missing: Literal["escalate", "keep"] = "escalate"
    # Ask for log-probs and record the confidence (headers, metrics, shadow records), but never
    # escalate: how to collect the data that `gateway shadow calibrate` turns into a threshold.
    observe_only: bool = False
