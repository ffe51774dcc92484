"""Prices and capabilities of a backend: the policy's own numbers over litellm's model map.

The model map is the JSON file litellm ships (``model_prices_and_context_window_backup.json``,
the one ``LITELLM_LOCAL_MODEL_COST_MAP=True`` makes litellm itself use). It is read straight
from litellm's package directory, without importing litellm (which takes seconds) and
without any network access.

Self-hosted backends are looked up in the map only when the policy names a ``price_model``:
their cost is the admin's GPU cost model, not some provider's list price.

``PriceBook`` holds a policy's resolved prices (every backend's and the savings reference's)
and is the one place usage becomes money: the request path's spend and savings, the cascade's
extra cost, the shadow's reference and judge calls and ``gateway simulate`` all ask it, so
prompt-cache reads and writes are priced the same way everywhere.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from gateway.backends.base import Usage
from gateway.config.schema import BackendConfig, Capabilities, Policy, SavingsConfig

log = logging.getLogger("gateway.pricing")

__all__ = [
    "CachePrices",
    "NO_CACHE_PRICES",
    "PriceBook",
    "Prices",
    "model_map",
    "lookup_model",
    "resolve_pricing",
    "resolve_cache_pricing",
    "resolve_capabilities",
    "reference_prices",
    "reference_cache_prices",
    "cost_usd",
]

Prices = tuple[float, float]  # (USD per prompt token, USD per completion token)
# (USD per prompt token read from the provider's prompt cache, per token written to it);
# None: charged at the prompt price
CachePrices = tuple[float | None, float | None]
NO_CACHE_PRICES: CachePrices = (None, None)
MODEL_MAP_FILE = "model_prices_and_context_window_backup.json"

# Map fields -> our capability fields.
_CAPABILITY_FIELDS = {
    "max_input_tokens": "context_window",
    "max_output_tokens": "max_output_tokens",
    "supports_vision": "vision",
    "supports_function_calling": "tools",
    "supports_response_schema": "json_schema",
}
# A model the map knows without this flag does not reason (gpt-4o, gpt-4.1): it is absent there.
_FLAG_FIELDS = {"supports_reasoning": "reasoning"}


@lru_cache(maxsize=1)
def model_map() -> dict[str, dict[str, Any]]:
    """litellm's local model map, or {} (with a warning) if litellm is not installed."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        log.warning("litellm is not installed: no model prices or capabilities from its map")
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_MAP_FILE
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("cannot read litellm's model map %s: %s", path, exc)
        return {}
    data.pop("sample_spec", None)
    return data


@lru_cache(maxsize=1024)
def lookup_model(name: str) -> dict[str, Any] | None:
    """The map's entry for ``name``, tried as given and without its provider prefix."""
    table = model_map()
    if name in table:
        return table[name]
    if "/" in name:
        return table.get(name.split("/", 1)[1])
    return None


def _map_entry(cfg: BackendConfig) -> dict[str, Any] | None:
    if cfg.price_model:
        return lookup_model(cfg.price_model)
    if cfg.self_hosted:
        return None
    return lookup_model(cfg.model)


def _entry_prices(entry: dict[str, Any]) -> Prices:
    return float(entry.get("input_cost_per_token") or 0.0), float(
        entry.get("output_cost_per_token") or 0.0
    )


def resolve_pricing(cfg: BackendConfig) -> Prices:
    """(USD per prompt token, USD per completion token) for one backend."""
    if cfg.pricing is not None:
        return cfg.pricing.usd_per_token()
    entry = _map_entry(cfg)
    if entry is not None:
        return _entry_prices(entry)
    if not cfg.self_hosted:
        log.warning(
            "no price for model %r (not in litellm's model map; set price_model or pricing): its cost counts as 0",
            cfg.price_model or cfg.model,
        )
    return 0.0, 0.0


def _price(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def resolve_cache_pricing(cfg: BackendConfig) -> CachePrices:
    """Prompt-cache read and write prices of one backend: the policy's ``pricing`` (which
    replaces the map's prices altogether), else the map's ``cache_read_input_token_cost`` /
    ``cache_creation_input_token_cost``; unknown: the prompt price."""
    if cfg.pricing is not None:
        return cfg.pricing.cache_usd_per_token()
    entry = _map_entry(cfg)
    return NO_CACHE_PRICES if entry is None else _entry_cache_prices(entry)


def _entry_cache_prices(entry: dict[str, Any]) -> CachePrices:
    return (
        _price(entry.get("cache_read_input_token_cost")),
        _price(entry.get("cache_creation_input_token_cost")),
    )


def resolve_capabilities(cfg: BackendConfig) -> Capabilities:
    """The policy's capabilities, with unset fields filled from the model map where known."""
    entry = _map_entry(cfg)
    if entry is None:
        return cfg.capabilities
    known: dict[str, Any] = {}
    for src, dst in _CAPABILITY_FIELDS.items():
        v = entry.get(src)
        if v is not None:
            known[dst] = v
    for src, dst in _FLAG_FIELDS.items():
        known[dst] = bool(entry.get(src))
    mode = entry.get("mode")
    if mode is not None:
        known["embeddings"] = mode == "embedding"
        known["chat"] = mode in ("chat", "completion", "responses")
    given = cfg.capabilities.model_dump(exclude_none=True)
    return Capabilities(**(known | given))


def reference_prices(savings: SavingsConfig) -> Prices:
    """Prices of the model savings are measured against."""
    if savings.reference_pricing is not None:
        return savings.reference_pricing.usd_per_token()
    entry = lookup_model(savings.reference_model)
    if entry is None:
        log.warning(
            "savings.reference_model %r is not in litellm's model map; set savings.reference_pricing. Savings count as 0",
            savings.reference_model,
        )
        return 0.0, 0.0
    return _entry_prices(entry)


def reference_cache_prices(savings: SavingsConfig) -> CachePrices:
    """Prompt-cache prices of the reference model, as ``resolve_cache_pricing`` finds a
    backend's: ``reference_pricing`` (all of it) over the model map."""
    if savings.reference_pricing is not None:
        return savings.reference_pricing.cache_usd_per_token()
    entry = lookup_model(savings.reference_model)
    return NO_CACHE_PRICES if entry is None else _entry_cache_prices(entry)


def cost_usd(usage: Usage | None, prices: Prices, cache: CachePrices = NO_CACHE_PRICES) -> float:
    """What ``usage`` cost: fresh prompt tokens at the prompt price, cache reads and writes at
    their own (where known), completion tokens at the completion price."""
    if usage is None:
        return 0.0
    p_in, p_out = prices
    read = min(usage.cached_tokens, usage.prompt_tokens)
    write = min(usage.cache_write_tokens, usage.prompt_tokens - read)
    fresh = usage.prompt_tokens - read - write
    p_read = p_in if cache[0] is None else cache[0]
    p_write = p_in if cache[1] is None else cache[1]
    return fresh * p_in + read * p_read + write * p_write + usage.completion_tokens * p_out


ZERO_PRICES: Prices = (0.0, 0.0)


@dataclass(frozen=True, slots=True)
class PriceBook:
    """A policy's prices, resolved once: per backend and for the savings reference model."""

    prices: Mapping[str, Prices]  # backend -> USD per (prompt, completion) token
    cache_prices: Mapping[str, CachePrices]  # backend -> USD per cache (read, write) token
    reference: Prices
    reference_cache: CachePrices = NO_CACHE_PRICES

    @classmethod
    def of(cls, policy: Policy) -> PriceBook:
        backends = policy.backends
        return cls(
            prices={n: resolve_pricing(c) for n, c in backends.items()},
            cache_prices={n: resolve_cache_pricing(c) for n, c in backends.items()},
            reference=reference_prices(policy.savings),
            reference_cache=reference_cache_prices(policy.savings),
        )

    def cost(self, backend: str, usage: Usage | None) -> float:
        """What ``usage`` cost on ``backend`` (a backend without prices: 0)."""
        cache = self.cache_prices.get(backend, NO_CACHE_PRICES)
        return cost_usd(usage, self.prices.get(backend, ZERO_PRICES), cache)

    def reference_cost(self, usage: Usage | None) -> float:
        """What the same tokens would have cost on the reference model, its cache prices
        applied to the prompt tokens the usage says were read from or written to a cache."""
        return cost_usd(usage, self.reference, self.reference_cache)

    def savings(self, usage: Usage | None, cost: float) -> float:
        return max(0.0, self.reference_cost(usage) - cost)
