"""The policy file's schema: one typed class per concern, unknown keys rejected.

Values that come from the environment are written ``os.environ/NAME`` (LiteLLM's
convention) or ``os.environ/NAME:-default``. They are resolved at load time against the
``env`` mapping passed in the validation context, so tests never touch ``os.environ``.
Secrets (API keys) must be references; a literal secret is refused unless
``allow_literal_secrets: true``, which logs a loud warning.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.config.base import ENV_REF, Strict, resolve_env, resolve_env_values
from gateway.config.fleet import FleetConfig
from gateway.config.shadow import CascadeConfig, ShadowModelConfig, ShadowPolicy

LABEL_KEY = r"^[A-Za-z0-9_.:/-]{1,64}$"

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_MAX_INFLIGHT_BODY_BYTES = 256 * 1024 * 1024
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_CACHE_TTL_S = 3600
DEFAULT_CACHE_MAX_ENTRIES = 10_000
DEFAULT_REFERENCE_MODEL = "gpt-4o"
# Output tokens are generated one step at a time; a prompt is processed in parallel. Unless the
# admin measured it, a self-hosted prompt token costs this fraction of a generated one.
DEFAULT_PROMPT_TOKEN_COST_RATIO = 0.1


class Range(Strict):
    """A numeric comparison; every given bound must hold."""

    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    def contains(self, x: float) -> bool:
        return (
            (self.gt is None or x > self.gt)
            and (self.gte is None or x >= self.gte)
            and (self.lt is None or x < self.lt)
            and (self.lte is None or x <= self.lte)
        )


# ---------------------------------------------------------------- backends


class RetryConfig(Strict):
    """Retries against the same backend before falling back to the next one."""

    max_attempts: int = Field(2, ge=1, le=10)  # including the first
    backoff_base_s: float = Field(0.1, ge=0)
    backoff_max_s: float = Field(2.0, ge=0)
    max_retry_after_s: float = Field(10.0, ge=0)  # a longer Retry-After means: fall back instead


class CircuitBreakerConfig(Strict):
    failure_threshold: int = Field(5, ge=1)  # consecutive failures that open the circuit
    cooldown_s: float = Field(30.0, gt=0)  # then one half-open probe request is let through


class Capabilities(Strict):
    """What a backend can do. Unset fields come from litellm's model map where it knows the model."""

    context_window: int | None = Field(None, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    chat: bool | None = None
    vision: bool | None = None
    tools: bool | None = None
    json_schema: bool | None = None
    embeddings: bool | None = None
    # The model reasons (Responses ``reasoning``, Anthropic ``thinking``). False: a native
    # backend gets a request that asks for it translated instead (the field dropped), since
    # the model would refuse it with a 400 (e.g. gpt-4o and ``reasoning``). None: unknown,
    # sent natively as asked.
    reasoning: bool | None = None


class Pricing(Strict):
    """USD prices. Either per-million-token prices, or (self-hosted) a GPU cost model:
    ``gpu_usd_per_hour`` over measured ``tokens_per_second`` gives the effective price of a
    generated token; a prompt token costs ``prompt_token_cost_ratio`` of that unless
    ``prompt_tokens_per_second`` is given. Prompt tokens read from or written to the
    provider's prompt cache cost ``cache_read_usd_per_mtok`` / ``cache_write_usd_per_mtok``
    (unset: the input price)."""

    input_usd_per_mtok: float | None = Field(None, ge=0)
    output_usd_per_mtok: float | None = Field(None, ge=0)
    cache_read_usd_per_mtok: float | None = Field(None, ge=0)
    cache_write_usd_per_mtok: float | None = Field(None, ge=0)
    gpu_usd_per_hour: float | None = Field(None, ge=0)
    tokens_per_second: float | None = Field(None, gt=0)
    prompt_tokens_per_second: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_form(self) -> Pricing:
        per_token = any(
            v is not None
            for v in (
                self.input_usd_per_mtok,
                self.output_usd_per_mtok,
                self.cache_read_usd_per_mtok,
                self.cache_write_usd_per_mtok,
            )
        )
        gpu = self.gpu_usd_per_hour is not None or self.tokens_per_second is not None
        if per_token and gpu:
            raise ValueError(
                "give either *_usd_per_mtok prices or gpu_usd_per_hour + tokens_per_second, not both"
            )
        if gpu and (self.gpu_usd_per_hour is None or self.tokens_per_second is None):
            raise ValueError("gpu_usd_per_hour and tokens_per_second go together")
        return self

    def usd_per_token(self) -> tuple[float, float]:
        """(prompt, completion) USD per token."""
        if self.gpu_usd_per_hour is not None and self.tokens_per_second:
            out = self.gpu_usd_per_hour / 3600.0 / self.tokens_per_second
            if self.prompt_tokens_per_second:
                inp = self.gpu_usd_per_hour / 3600.0 / self.prompt_tokens_per_second
            else:
                inp = out * DEFAULT_PROMPT_TOKEN_COST_RATIO
            return inp, out
        return (self.input_usd_per_mtok or 0.0) / 1e6, (self.output_usd_per_mtok or 0.0) / 1e6

    def cache_usd_per_token(self) -> tuple[float | None, float | None]:
        """(cache read, cache write) USD per prompt token; None: the input price."""
        read, write = self.cache_read_usd_per_mtok, self.cache_write_usd_per_mtok
        return (
            None if read is None else read / 1e6,
            None if write is None else write / 1e6,
        )


# Caller protocols a backend may receive in the caller's own form (native pass-through).
NativeProtocol = Literal["anthropic", "responses"]


class BackendBase(Strict):
    """What every backend kind has: a model, a key, capabilities, prices, limits, resilience."""

    model: str
    api_key: SecretStr | None = None
    self_hosted: bool = False
    # provenance, free-form: {vendor: alibaba, origin: cn, license: apache-2.0, weights: open}
    labels: dict[Annotated[str, Field(pattern=LABEL_KEY)], str] = {}
    enabled: bool = True
    price_model: str | None = None  # litellm model-map name for prices and capabilities
    pricing: Pricing | None = None
    capabilities: Capabilities = Capabilities()
    tokenizer: str | None = None  # path to a tokenizer.json for exact prompt-token counts
    timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0)
    connect_timeout_s: float = Field(DEFAULT_CONNECT_TIMEOUT_S, gt=0)
    max_connections: int = Field(256, ge=1)
    retry: RetryConfig = RetryConfig()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    headers: dict[str, str] = {}
    # Callers speaking one of these protocols get their own body sent through untranslated
    # (thinking blocks, cache_control, reasoning items kept). None: what the kind implies.
    native_protocols: list[NativeProtocol] | None = None
    # Set at load: why the backend is off (e.g. its key variable is unset). Not part of the YAML.
    _disabled_reason: str | None = PrivateAttr(None)

    @property
    def disabled_reason(self) -> str | None:
        return self._disabled_reason

    def disable(self, reason: str) -> None:
        self._disabled_reason = reason

    @property
    def natives(self) -> frozenset[str]:
        """The caller protocols this backend takes natively (explicit, else the kind's default)."""
        if self.native_protocols is not None:
            return frozenset(self.native_protocols)
        return self._implied_natives()

    def _implied_natives(self) -> frozenset[str]:
        return frozenset()

    @field_validator("model", "tokenizer", mode="before")
    @classmethod
    def _env(cls, v: Any, info: ValidationInfo) -> Any:
        return resolve_env(v, info) if isinstance(v, str) else v

    @field_validator("base_url", mode="before", check_fields=False)
    @classmethod
    def _env_url(cls, v: Any, info: ValidationInfo) -> Any:
        return resolve_env(v, info) if isinstance(v, str) else v

    @field_validator("headers", mode="before")
    @classmethod
    def _env_headers(cls, v: Any, info: ValidationInfo) -> Any:
        return resolve_env_values(v, info)

    @field_validator("api_key", mode="before")
    @classmethod
    def _secret(cls, v: Any, info: ValidationInfo) -> Any:
        return _resolve_secret(v, info, "api_key")


class OpenAICompatConfig(BackendBase):
    """kind ``openai_compatible``: any server speaking OpenAI's API (OpenAI itself, our
    local_engine, vLLM, SGLang, Ollama); bodies pass through with only ``model`` replaced.
    A ``base_url`` written ``os.environ/NAME`` whose variable is unset disables the backend."""

    kind: Literal["openai_compatible"]
    base_url: str | None = None
    fleet: FleetConfig | None = None  # several replicas instead of one base_url

    @model_validator(mode="after")
    def _natives(self) -> OpenAICompatConfig:
        wrong = set(self.native_protocols or ()) - {"responses"}
        if wrong:
            raise ValueError(
                f"native_protocols {sorted(wrong)}: an openai_compatible backend can take "
                "'responses' natively (POST <base_url>/responses); Anthropic backends are kind litellm"
            )
        if self.native_protocols and self.fleet is not None:
            raise ValueError("native_protocols is not supported on a fleet (one base_url only)")
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _required_url(cls, data: Any, handler: Any) -> OpenAICompatConfig:
        cfg = handler(data)
        if not cfg.base_url and cfg.fleet is None:
            raw = data.get("base_url") if isinstance(data, dict) else None
            m = ENV_REF.match(raw) if isinstance(raw, str) else None
            if m is None:
                raise ValueError("base_url is required for kind openai_compatible")
            cfg.disable(f"environment variable {m.group(1)} is not set")
        return cfg


class LiteLLMConfig(BackendBase):
    """kind ``litellm``: providers that need translation (``anthropic/...``, ``gemini/...``, ...);
    ``base_url`` overrides the provider's endpoint."""

    kind: Literal["litellm"]
    base_url: str | None = None

    @field_validator("model", mode="after")
    @classmethod
    def _provider(cls, v: str) -> str:
        if "/" not in v:
            raise ValueError(
                "litellm models are written provider/model, e.g. anthropic/claude-3-5-sonnet-latest"
            )
        return v

    @model_validator(mode="after")
    def _natives(self) -> LiteLLMConfig:
        if self.native_protocols and (
            set(self.native_protocols) != {"anthropic"} or not self.model.startswith("anthropic/")
        ):
            raise ValueError(
                "native_protocols on kind litellm: only ['anthropic'], with an anthropic/... model "
                "(openai_compatible backends take 'responses')"
            )
        return self

    def _implied_natives(self) -> frozenset[str]:
        # Anthropic's API is the Messages API: an Anthropic caller's body goes there as sent
        return frozenset({"anthropic"}) if self.model.startswith("anthropic/") else frozenset()


# One variant per kind, each with only its own fields (TensorZero's provider configs).
BackendConfig = Annotated[OpenAICompatConfig | LiteLLMConfig, Field(discriminator="kind")]
BACKEND_KINDS = ("openai_compatible", "litellm")
_BACKEND_ADAPTER: TypeAdapter[BackendConfig] = TypeAdapter(BackendConfig)


def parse_backend(data: Any, env: dict[str, str] | None = None, **context: Any) -> BackendConfig:
    """One backend's config from its YAML mapping (tests and tools; the loader validates a
    whole policy)."""
    return _BACKEND_ADAPTER.validate_python(data, context={"env": env or {}, **context})


def _resolve_secret(v: Any, info: ValidationInfo, field: str) -> Any:
    """A secret must be an ``os.environ/NAME`` reference; returns the value, or None if unset.

    The unset case is recorded in the context's ``unset_secrets`` list so the loader can
    disable the owner with one clear log line instead of failing."""
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError(f"{field} must be a string like os.environ/NAME")
    ref = ENV_REF.match(v)
    if ref:
        got = resolve_env(v, info)
        if got is None and info.context is not None:
            info.context.setdefault("unset_secrets", []).append(ref.group(1))
        return got
    ctx = info.context or {}
    if not ctx.get("allow_literal_secrets"):
        raise ValueError(
            f"{field} holds a literal secret; write it as os.environ/NAME and set the variable "
            "(or set allow_literal_secrets: true at the top level, not recommended)"
        )
    ctx.setdefault("literal_secrets", []).append(field)
    return v


# ---------------------------------------------------------------- routing


Need = Literal["vision", "tools", "json_schema", "json_object"]


class Condition(Strict):
    """When a rule applies. Every given field must match (AND); ``any`` is an OR of conditions."""

    needs: list[Need] | None = None
    prompt_tokens: Range | None = None
    exceeds_context_of: str | None = None  # a backend name: the request would not fit its window
    difficulty: Range | Literal["hard"] | None = None  # "hard": score > the model's threshold
    teams: list[str] | None = None
    keys: list[str] | None = None  # API key names (never the secrets themselves)
    # Header names are case-insensitive; a header value is a comma-separated list (repeated
    # headers are joined), and a metadata value may be a list: any item that matches counts.
    headers: dict[str, str | list[str]] | None = None
    metadata: dict[str, str | list[str]] | None = None
    ignore_case: bool = False  # compare header and metadata values case-insensitively
    stream: bool | None = None
    any: list[Condition] | None = None

    @field_validator("headers", mode="after")
    @classmethod
    def _lower(cls, v: dict[str, str | list[str]] | None) -> dict[str, str | list[str]] | None:
        return {k.lower(): x for k, x in v.items()} if v else v

    def uses_difficulty(self) -> bool:
        return self.difficulty is not None or any(c.uses_difficulty() for c in self.any or ())


class Rule(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    when: Condition | None = None  # None: always
    route: list[str] = Field(min_length=1)  # backend names, tried in order
    self_hosted_only: bool = False  # data that must stay home: never a proprietary backend
    use_fallbacks: bool = True  # append the model's fallbacks after ``route``
    cascade: CascadeConfig | None = None  # self-hosted first, escalate when unsure

    @field_validator("route", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class DifficultyConfig(Strict):
    """How the model's difficulty score is computed and where "hard" starts.

    ``threshold`` is used as is, unless ``escalate_share`` asks for the threshold that sends
    that share of a calibration sample to the strong side; ``spend_cap_usd`` per
    ``spend_cap_period`` raises the threshold while proprietary spend runs ahead of budget."""

    scorer: Literal["heuristic", "learned"] = "heuristic"
    artifact: str | None = None  # learned: a directory from `gateway router train`; None: built-in
    threshold: float = Field(0.5, ge=0, le=1)
    escalate_share: float | None = Field(None, gt=0, lt=1)
    calibration_sample: str | None = None  # JSONL of {"prompt": ...}; None: the built-in sample
    spend_cap_usd: float | None = Field(None, gt=0)
    spend_cap_period: Literal["hour", "day", "month"] = "day"


class VirtualModel(Strict):
    """A model name clients ask for (``auto``, or an alias such as ``gpt-4o``)."""

    description: str = ""
    rules: list[Rule] = []
    route: list[str] | None = None  # shorthand for a single catch-all rule
    fallbacks: list[str] = []
    embeddings: list[str] = []  # backends for /v1/embeddings requests naming this model
    difficulty: DifficultyConfig = DifficultyConfig()
    shadow: ShadowModelConfig | None = None  # overrides the global shadow: section's sampling

    @field_validator("route", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _shorthand(self) -> VirtualModel:
        if self.route is not None:
            if self.rules:
                raise ValueError("give either route (shorthand) or rules, not both")
            object.__setattr__(self, "rules", [Rule(name="default", route=self.route)])
        if not self.rules and not self.embeddings:
            raise ValueError("a model needs rules, route or embeddings")
        return self

    def uses_difficulty(self) -> bool:
        return any(r.when is not None and r.when.uses_difficulty() for r in self.rules)


# ---------------------------------------------------------------- provenance


class Provenance(Strict):
    """Which backends a team, key or data rule may reach, by their ``labels``.

    ``deny``: a backend carrying any listed value of a label is refused. ``require``: every
    listed label must be present on the backend with one of the listed values.
    ``self_hosted_only``: proprietary backends are refused. ``deny_backends``: by name."""

    deny: dict[str, str | list[str]] = {}
    require: dict[str, str | list[str]] = {}
    self_hosted_only: bool = False
    deny_backends: list[str] = []

    def is_empty(self) -> bool:
        return not (self.deny or self.require or self.self_hosted_only or self.deny_backends)


class DataRule(Strict):
    """A policy-level rule about data: it applies to every virtual model, whatever model name
    the client asks for. When ``when`` matches, the request may only reach backends that pass
    ``only``; ``fallbacks`` are tried (under the same restriction) after the model's own
    candidates, so data that must stay home is still served when the client named a
    proprietary-only model."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    when: Condition
    only: Provenance
    fallbacks: list[str] = []


# ---------------------------------------------------------------- the rest


Period = Literal["minute", "hour", "day", "month"]


class TeamConfig(Strict):
    """Limits shared by every key of a team, enforced across replicas through the shared state."""

    budget_usd: float | None = Field(None, gt=0)  # proprietary + self-hosted spend per period
    budget_period: Period = "month"
    # Past the budget: keep serving on self-hosted backends only, or refuse with 429.
    on_budget_exhausted: Literal["self_hosted_only", "reject"] = "self_hosted_only"
    rpm: int | None = Field(None, gt=0)  # requests per minute for the whole team
    tpm: int | None = Field(None, gt=0)  # tokens (prompt + completion) per minute
    models: list[str] | None = None  # virtual models the team may use; None: all
    provenance: Provenance = Provenance()  # e.g. {deny: {origin: cn}}: binds every request


class ApiKey(Strict):
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$"
    )  # shown in logs and metrics, never the key
    key: SecretStr | None
    team: str = Field("default", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    models: list[str] | None = None  # allowed virtual models; None: all
    rpm: int | None = Field(None, gt=0)  # requests per minute for this key
    tpm: int | None = Field(None, gt=0)  # tokens (prompt + completion) per minute
    budget_usd: float | None = Field(None, gt=0)  # this key's spend per budget_period
    budget_period: Period = "month"
    on_budget_exhausted: Literal["self_hosted_only", "reject"] = "self_hosted_only"
    provenance: Provenance = Provenance()

    @field_validator("key", mode="before")
    @classmethod
    def _secret(cls, v: Any, info: ValidationInfo) -> Any:
        return _resolve_secret(v, info, "key")


class AuthConfig(Strict):
    """Client keys. With no keys resolved, the gateway is open (and says so at start)."""

    keys: list[ApiKey] = []
    admin_key: SecretStr | None = None

    @field_validator("admin_key", mode="before")
    @classmethod
    def _secret(cls, v: Any, info: ValidationInfo) -> Any:
        return _resolve_secret(v, info, "admin_key")


class CacheConfig(Strict):
    enabled: bool = True
    redis_url: str | None = None  # None: in-process LRU
    ttl_s: int = Field(DEFAULT_CACHE_TTL_S, gt=0)
    max_entries: int = Field(DEFAULT_CACHE_MAX_ENTRIES, gt=0)  # in-process LRU only
    max_entry_bytes: int = Field(1024 * 1024, gt=0)
    deterministic_only: bool = True  # cache only temperature 0 or seeded requests
    namespace: str = (
        "gw"  # key prefix for everything the gateway keeps in Redis (cache, spend, limits)
    )

    @field_validator("redis_url", mode="before")
    @classmethod
    def _env(cls, v: Any, info: ValidationInfo) -> Any:
        return resolve_env(v, info) if isinstance(v, str) else v


class SavingsConfig(Strict):
    """Savings = what the same tokens would have cost on the reference model, minus the real cost."""

    reference_model: str = DEFAULT_REFERENCE_MODEL  # litellm model-map name
    reference_pricing: Pricing | None = None  # overrides the model map


class MetricsConfig(Strict):
    enabled: bool = True
    team_label: bool = False  # add a team label (bounded by the number of teams in the policy)


class ServerConfig(Strict):
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, gt=0)
    request_timeout_s: float = Field(600.0, gt=0)  # whole request, all attempts and fallbacks
    # Responses API answers stored for previous_response_id and GET /v1/responses/{id}
    responses_ttl_s: int = Field(30 * 24 * 3600, gt=0)
    # reading one request body, from its first byte to its last: slow senders are cut off (408)
    body_timeout_s: float = Field(DEFAULT_BODY_TIMEOUT_S, gt=0)
    # request bodies held by this process at once (being read or in use); past it: 503, retry
    max_inflight_body_bytes: int = Field(DEFAULT_MAX_INFLIGHT_BODY_BYTES, gt=0)


DEFAULT_SPOOL_DIR = "/var/tmp/gateway-ledger"


class LedgerConfig(Strict):
    """The spend ledger in PostgreSQL: off unless ``database_url`` resolves to a URL."""

    database_url: str | None = None  # postgresql://user@host:5432/db (may hold a password)
    spool_dir: str = DEFAULT_SPOOL_DIR  # rows wait here while the database is slow or down
    batch_size: int = Field(500, ge=1, le=50_000)
    flush_interval_s: float = Field(0.5, gt=0, le=60)
    max_buffer_rows: int = Field(10_000, ge=1)  # past this, rows go to the spool file
    write_timeout_s: float = Field(5.0, gt=0)

    @field_validator("database_url", "spool_dir", mode="before")
    @classmethod
    def _env(cls, v: Any, info: ValidationInfo) -> Any:
        return resolve_env(v, info) if isinstance(v, str) else v


class TracingConfig(Strict):
    """OpenTelemetry traces over OTLP/HTTP: off unless ``otlp_endpoint`` resolves to a URL."""

    otlp_endpoint: str | None = None  # e.g. http://collector:4318/v1/traces
    service_name: str = "llm-gateway"
    headers: dict[str, str] = {}  # for the collector (values may be os.environ/ references)

    @field_validator("otlp_endpoint", mode="before")
    @classmethod
    def _env(cls, v: Any, info: ValidationInfo) -> Any:
        return resolve_env(v, info) if isinstance(v, str) else v

    @field_validator("headers", mode="before")
    @classmethod
    def _env_headers(cls, v: Any, info: ValidationInfo) -> Any:
        return resolve_env_values(v, info)


class Policy(Strict):
    version: Literal[1] = 1
    allow_literal_secrets: bool = False
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    cache: CacheConfig = CacheConfig()
    savings: SavingsConfig = SavingsConfig()
    metrics: MetricsConfig = MetricsConfig()
    state_redis_url: str | None = (
        None  # shared state (budgets, rate limits); None: the cache's redis_url, else in-process
    )
    teams: dict[str, TeamConfig] = {}
    # Rules about data that hold for every virtual model (checked before the model's own rules).
    data_rules: list[DataRule] = []
    ledger: LedgerConfig = LedgerConfig()
    tracing: TracingConfig = TracingConfig()
    shadow: ShadowPolicy | None = None  # shadow evaluation of self-hosted answers
    backends: Annotated[dict[str, BackendConfig], Field(min_length=1)]
    models: Annotated[dict[str, VirtualModel], Field(min_length=1)]

    @field_validator("state_redis_url", mode="before")
    @classmethod
    def _env(cls, v: Any, info: ValidationInfo) -> Any:
        return resolve_env(v, info) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _references(self) -> Policy:
        names = set(self.backends)
        for mname, m in self.models.items():
            for r in m.rules:
                refs = list(r.route) + _condition_refs(r.when)
                for b in refs:
                    if b not in names:
                        raise ValueError(
                            f"models.{mname} rule {r.name!r} names unknown backend {b!r}"
                        )
                if r.self_hosted_only and not any(self.backends[b].self_hosted for b in r.route):
                    raise ValueError(
                        f"models.{mname} rule {r.name!r} is self_hosted_only but routes to no self_hosted backend"
                    )
            for b in list(m.fallbacks) + list(m.embeddings):
                if b not in names:
                    raise ValueError(f"models.{mname} names unknown backend {b!r}")
            seen: set[str] = set()
            for r in m.rules:
                if r.name in seen:
                    raise ValueError(f"models.{mname} has two rules named {r.name!r}")
                seen.add(r.name)
        self._check_governance(names)
        _check_shadow(self)
        return self

    def _check_governance(self, names: set[str]) -> None:
        seen: set[str] = set()
        for i, d in enumerate(self.data_rules):
            where = f"data_rules[{i}] ({d.name!r})"
            if d.name in seen:
                raise ValueError(f"two data rules named {d.name!r}")
            seen.add(d.name)
            for b in [*d.fallbacks, *d.only.deny_backends, *_condition_refs(d.when)]:
                if b not in names:
                    raise ValueError(f"{where} names unknown backend {b!r}")
        scopes = [(f"teams.{t}", c.provenance, c.models) for t, c in self.teams.items()]
        scopes += [(f"auth.keys.{k.name}", k.provenance, k.models) for k in self.auth.keys]
        for where, prov, models in scopes:
            for b in prov.deny_backends:
                if b not in names:
                    raise ValueError(f"{where}.provenance names unknown backend {b!r}")
            for m in models or ():
                if m not in self.models:
                    raise ValueError(f"{where}.models names unknown model {m!r}")


def _check_shadow(policy: Policy) -> None:
    """Shadow and cascade settings name real backends; home_* backends are self-hosted."""
    backends = policy.backends
    sections: list[tuple[str, ShadowPolicy | ShadowModelConfig]] = (
        [("shadow", policy.shadow)] if policy.shadow is not None else []
    )
    sections += [(f"models.{n}.shadow", m.shadow) for n, m in policy.models.items() if m.shadow]
    for where, sec in sections:
        for field in ("reference", "judge", "home_judge", "home_reference"):
            b = getattr(sec, field)
            if b is None:
                continue
            if b not in backends:
                raise ValueError(f"{where}.{field} names unknown backend {b!r}")
            if field.startswith("home_") and not backends[b].self_hosted:
                raise ValueError(f"{where}.{field}: backend {b!r} is not self_hosted")
        if sec is not policy.shadow and policy.shadow is None:
            raise ValueError(f"{where} needs a global shadow: section (store, cap and queue)")
    for mname, m in policy.models.items():
        for r in m.rules:
            if r.cascade is not None and not backends[r.route[0]].self_hosted:
                raise ValueError(
                    f"models.{mname} rule {r.name!r}: cascade needs a self_hosted first backend"
                )


def _condition_refs(c: Condition | None) -> list[str]:
    if c is None:
        return []
    out = [c.exceeds_context_of] if c.exceeds_context_of else []
    for sub in c.any or ():
        out += _condition_refs(sub)
    return out


def policy_json_schema() -> str:
    """The JSON Schema published as policies/policy.schema.json (editors use it for completion)."""
    import json

    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Gateway policy"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
