"""A self-hosted backend served by several engine replicas: where they are, how to balance,
when to spill over. The ``fleet:`` block of an ``openai_compatible`` backend.

    fleet:
      endpoints: [http://10.0.0.1:8000/v1, http://10.0.0.2:8000/v1]
      dns: {name: engine.ns.svc.cluster.local, port: 8000}     # and/or: re-resolved every refresh_s
      balance: least_load                                       # or round_robin
      prefix_affinity: {enabled: true, load_factor: 1.25}
      spill_over: {max_waiting: 8, max_kv_cache_usage: 0.95, when_saturated: wait}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

__all__ = [
    "AffinityConfig",
    "DnsConfig",
    "FleetConfig",
    "ReplicaBreakerConfig",
    "SpillOverConfig",
]

DEFAULT_METRICS_INTERVAL_S = 2.0
DEFAULT_DNS_REFRESH_S = 10.0
DEFAULT_PREFIX_CHARS = 2048
DEFAULT_LOAD_FACTOR = 1.25


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DnsConfig(_Strict):
    """A name whose A/AAAA records are the replicas (a Kubernetes headless Service)."""

    name: str = Field(min_length=1)
    port: int = Field(gt=0, lt=65536)
    scheme: Literal["http", "https"] = "http"
    path: str = "/v1"  # the OpenAI API's root on each replica
    refresh_s: float = Field(DEFAULT_DNS_REFRESH_S, gt=0)

    @field_validator("name", mode="before")
    @classmethod
    def _env(cls, v: Any, info: ValidationInfo) -> Any:
        from gateway.config.schema import resolve_env

        return resolve_env(v, info) if isinstance(v, str) else v


class AffinityConfig(_Strict):
    """Prefix affinity: a conversation's leading text hashes onto a ring of replicas, so it
    keeps landing where its prefix cache is; a replica past ``load_factor`` times the mean
    load passes the request on along the ring (consistent hashing with bounded loads)."""

    enabled: bool = True
    prefix_chars: int = Field(DEFAULT_PREFIX_CHARS, ge=16)  # how much leading text is the key
    load_factor: float = Field(DEFAULT_LOAD_FACTOR, ge=1.0)


class SpillOverConfig(_Strict):
    """A replica is saturated past any of these (its scraped queue or KV-cache usage, or the
    gateway's own count of requests it has in flight). When every replica is saturated, a
    request that may leave goes to the rule's next backend; one that may not (it must stay
    self-hosted, or nothing follows) waits in the least-loaded replica's queue or fails with
    503, as ``when_saturated`` says."""

    max_waiting: int | None = Field(None, ge=0)
    max_kv_cache_usage: float | None = Field(None, gt=0, le=1)
    max_outstanding: int | None = Field(None, ge=1)
    when_saturated: Literal["wait", "fail"] = "wait"

    @property
    def active(self) -> bool:
        return any(
            x is not None for x in (self.max_waiting, self.max_kv_cache_usage, self.max_outstanding)
        )


class ReplicaBreakerConfig(_Strict):
    """Per replica: consecutive failures that take it out of rotation, then a cool-down before
    one request tries it again."""

    failure_threshold: int = Field(2, ge=1)
    cooldown_s: float = Field(5.0, gt=0)


class FleetConfig(_Strict):
    endpoints: list[str] = []  # OpenAI API roots, like base_url
    dns: DnsConfig | None = None
    balance: Literal["least_load", "round_robin"] = "least_load"
    prefix_affinity: AffinityConfig = AffinityConfig()
    metrics_path: str | None = "/metrics"  # on each replica's origin; None: gateway counts only
    metrics_interval_s: float = Field(DEFAULT_METRICS_INTERVAL_S, gt=0)
    spill_over: SpillOverConfig = SpillOverConfig()
    replica_circuit_breaker: ReplicaBreakerConfig = ReplicaBreakerConfig()

    @field_validator("endpoints", mode="before")
    @classmethod
    def _env(cls, v: Any, info: ValidationInfo) -> Any:
        from gateway.config.schema import resolve_env

        if isinstance(v, str):  # one variable holding a comma-separated list
            v = [v]
        if not isinstance(v, list):
            return v
        out: list[Any] = []
        for x in v:
            got = resolve_env(x, info) if isinstance(x, str) else x
            if isinstance(got, str):
                out += [u.strip() for u in got.split(",") if u.strip()]
            elif got is not None:
                out.append(got)
        return out

    @field_validator("endpoints", mode="after")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"fleet endpoint {url!r} is not an http(s) URL")
        if len(set(v)) != len(v):
            raise ValueError("fleet endpoints are listed twice")
        return v

    @model_validator(mode="after")
    def _some(self) -> FleetConfig:
        if not self.endpoints and self.dns is None:
            raise ValueError("a fleet needs endpoints, dns, or both")
        if self.spill_over.max_waiting is not None and self.metrics_path is None:
            raise ValueError("spill_over.max_waiting needs metrics_path (the replicas' queue)")
        if self.spill_over.max_kv_cache_usage is not None and self.metrics_path is None:
            raise ValueError("spill_over.max_kv_cache_usage needs metrics_path")
        return self
