"""Prices and capabilities: the policy's numbers over litellm's local model map."""

from __future__ import annotations

import logging
import sys

import pytest

from gateway.backends.base import Usage
from gateway.backends.pricing import (
    PriceBook,
    cost_usd,
    lookup_model,
    model_map,
    reference_cache_prices,
    reference_prices,
    resolve_cache_pricing,
    resolve_capabilities,
    resolve_pricing,
)
from gateway.config.schema import BackendConfig, Policy, SavingsConfig, parse_backend


def backend(**kw) -> BackendConfig:
    base = {"kind": "openai_compatible", "model": "gpt-4o", "base_url": "http://127.0.0.1:9/v1"}
    return parse_backend(base | kw)


def test_map_is_read_without_importing_litellm():
    before = "litellm" in sys.modules
    table = model_map()
    assert len(table) > 100 and "gpt-4o" in table and "sample_spec" not in table
    if not before:
        assert "litellm" not in sys.modules


def test_lookup_with_and_without_provider_prefix():
    assert lookup_model("gpt-4o") is lookup_model("openai/gpt-4o")
    assert lookup_model("anthropic/claude-sonnet-4-5") is not None
    assert lookup_model("no-such/model-xyz") is None


def test_proprietary_prices_come_from_the_map():
    entry = model_map()["gpt-4o"]
    assert resolve_pricing(backend()) == (
        entry["input_cost_per_token"],
        entry["output_cost_per_token"],
    )
    claude = backend(kind="litellm", model="anthropic/claude-sonnet-4-5", base_url=None)
    c = model_map()["claude-sonnet-4-5"]
    assert resolve_pricing(claude) == (c["input_cost_per_token"], c["output_cost_per_token"])


def test_price_model_names_the_map_entry():
    cfg = backend(model="my-deployment-name", price_model="gpt-4o-mini")
    e = model_map()["gpt-4o-mini"]
    assert resolve_pricing(cfg) == (e["input_cost_per_token"], e["output_cost_per_token"])


def test_explicit_per_mtok_pricing_overrides_the_map():
    cfg = backend(pricing={"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 4.0})
    assert resolve_pricing(cfg) == pytest.approx((1e-6, 4e-6))


def test_gpu_cost_model_for_self_hosted():
    # $3.60/h at 1000 generated tokens/s = $1e-6 per generated token; prompt tokens 10% of that
    cfg = backend(
        model="qwen", self_hosted=True, pricing={"gpu_usd_per_hour": 3.6, "tokens_per_second": 1000}
    )
    assert resolve_pricing(cfg) == pytest.approx((1e-7, 1e-6))
    measured = backend(
        model="qwen",
        self_hosted=True,
        pricing={
            "gpu_usd_per_hour": 3.6,
            "tokens_per_second": 1000,
            "prompt_tokens_per_second": 20000,
        },
    )
    assert resolve_pricing(measured) == pytest.approx((5e-8, 1e-6))


def test_self_hosted_is_free_by_default_and_never_priced_from_the_map(caplog):
    cfg = backend(model="gpt-4o", self_hosted=True)  # same name as a map entry, but our own GPU
    with caplog.at_level(logging.WARNING, logger="gateway.pricing"):
        assert resolve_pricing(cfg) == (0.0, 0.0)
    assert not caplog.records


def test_unknown_proprietary_model_costs_zero_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="gateway.pricing"):
        assert resolve_pricing(backend(model="mystery-model-9000")) == (0.0, 0.0)
    assert "mystery-model-9000" in caplog.text


def test_capabilities_from_the_map():
    caps = resolve_capabilities(backend())
    assert caps.context_window == 128000 and caps.vision and caps.tools and caps.json_schema
    assert caps.chat is True and caps.embeddings is False
    emb = resolve_capabilities(backend(model="text-embedding-3-small"))
    assert emb.embeddings is True and emb.chat is False


def test_reasoning_from_the_map_absent_means_no():
    """The map flags reasoning models; one it knows without the flag does not reason (gpt-4o
    answers 400 to ``reasoning``). Unknown (self-hosted, not in the map): None, not guessed."""
    assert resolve_capabilities(backend()).reasoning is False
    assert resolve_capabilities(backend(model="gpt-5-mini")).reasoning is True
    claude = {"kind": "litellm", "model": "anthropic/claude-sonnet-4-5"}
    assert resolve_capabilities(parse_backend(claude)).reasoning is True
    assert resolve_capabilities(backend(model="my-vllm", self_hosted=True)).reasoning is None
    declared = backend(model="gpt-5-mini", capabilities={"reasoning": False})
    assert resolve_capabilities(declared).reasoning is False


def test_policy_capabilities_override_the_map():
    caps = resolve_capabilities(backend(capabilities={"vision": False, "context_window": 4096}))
    assert caps.vision is False and caps.context_window == 4096 and caps.tools is True


def test_self_hosted_capabilities_are_the_policy_s_own():
    cfg = backend(
        model="gpt-4o", self_hosted=True, capabilities={"context_window": 8192, "tools": True}
    )
    caps = resolve_capabilities(cfg)
    assert caps.context_window == 8192 and caps.tools is True and caps.vision is None
    priced = backend(
        model="local-llama",
        self_hosted=True,
        price_model="gpt-4o-mini",
        capabilities={"vision": False},
    )
    caps = resolve_capabilities(priced)
    assert (
        caps.vision is False
        and caps.context_window == model_map()["gpt-4o-mini"]["max_input_tokens"]
    )


def test_reference_prices():
    e = model_map()["gpt-4o"]
    assert reference_prices(SavingsConfig()) == (
        e["input_cost_per_token"],
        e["output_cost_per_token"],
    )
    custom = SavingsConfig(reference_pricing={"input_usd_per_mtok": 10, "output_usd_per_mtok": 30})
    assert reference_prices(custom) == pytest.approx((1e-5, 3e-5))
    assert reference_prices(SavingsConfig(reference_model="nope-model")) == (0.0, 0.0)


def test_cost_usd():
    assert cost_usd(Usage(1000, 500), (2e-6, 8e-6)) == pytest.approx(0.006)
    assert cost_usd(None, (1.0, 1.0)) == 0.0


def test_cache_prices_from_the_map_or_the_policy():
    claude = parse_backend({"kind": "litellm", "model": "anthropic/claude-sonnet-4-5"})
    entry = lookup_model("claude-sonnet-4-5")
    assert entry is not None
    assert resolve_cache_pricing(claude) == (
        entry["cache_read_input_token_cost"],
        entry["cache_creation_input_token_cost"],
    )
    # OpenAI's map has a read price and no write price (writes are not charged apart)
    assert resolve_cache_pricing(backend()) == (
        model_map()["gpt-4o"]["cache_read_input_token_cost"],
        None,
    )
    own = backend(pricing={"input_usd_per_mtok": 3, "cache_read_usd_per_mtok": 0.3})
    assert resolve_cache_pricing(own) == (
        pytest.approx(0.3e-6),
        None,
    )  # the policy replaces the map
    assert resolve_cache_pricing(backend(model="my-vllm", self_hosted=True)) == (None, None)
    with pytest.raises(ValueError, match="not both"):
        backend(
            pricing={"gpu_usd_per_hour": 1, "tokens_per_second": 10, "cache_read_usd_per_mtok": 1}
        )


def test_cost_charges_cache_reads_and_writes_apart():
    u = Usage(prompt_tokens=100, completion_tokens=10, cached_tokens=60, cache_write_tokens=30)
    assert cost_usd(u, (1.0, 2.0), (0.1, 1.25)) == pytest.approx(
        10 * 1.0 + 60 * 0.1 + 30 * 1.25 + 20
    )
    assert cost_usd(u, (1.0, 2.0)) == pytest.approx(100 * 1.0 + 20)  # unknown: the input price
    assert cost_usd(u, (1.0, 2.0), (0.1, None)) == pytest.approx(40 + 6 + 20)
    odd = Usage(prompt_tokens=5, completion_tokens=0, cached_tokens=9, cache_write_tokens=9)
    assert cost_usd(odd, (1.0, 2.0), (0.1, 5.0)) == pytest.approx(0.5)  # never above the prompt


def test_reference_cache_prices_from_the_map_or_the_policy():
    e = model_map()["gpt-4o"]
    assert reference_cache_prices(SavingsConfig()) == (e["cache_read_input_token_cost"], None)
    own = SavingsConfig(
        reference_pricing={
            "input_usd_per_mtok": 3,
            "output_usd_per_mtok": 15,
            "cache_read_usd_per_mtok": 0.3,
            "cache_write_usd_per_mtok": 3.75,
        }
    )
    assert reference_cache_prices(own) == pytest.approx((0.3e-6, 3.75e-6))
    assert reference_cache_prices(SavingsConfig(reference_model="nope-model")) == (None, None)


def test_price_book_prices_savings_with_the_references_cache_prices():
    """A self-hosted answer whose prompt was mostly read from a prompt cache saves what the
    reference would have charged for those tokens at its cache price, not its input price."""
    policy = Policy.model_validate(
        {
            "savings": {
                "reference_model": "ref",
                "reference_pricing": {
                    "input_usd_per_mtok": 3,
                    "output_usd_per_mtok": 15,
                    "cache_read_usd_per_mtok": 0.3,
                    "cache_write_usd_per_mtok": 3.75,
                },
            },
            "backends": {
                "local": {
                    "kind": "openai_compatible",
                    "base_url": "http://127.0.0.1:9/v1",
                    "model": "m",
                    "self_hosted": True,
                    "pricing": {"input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.2},
                }
            },
            "models": {"auto": {"route": "local"}},
        }
    )
    book = PriceBook.of(policy)
    u = Usage(
        prompt_tokens=10_000, completion_tokens=1_000, cached_tokens=8_000, cache_write_tokens=1_000
    )
    cost = book.cost("local", u)
    assert cost == pytest.approx((10_000 * 0.1 + 1_000 * 0.2) / 1e6)  # no cache prices: input
    ref = (1_000 * 3 + 8_000 * 0.3 + 1_000 * 3.75 + 1_000 * 15) / 1e6  # 0.02415
    assert book.reference_cost(u) == pytest.approx(ref)
    assert book.savings(u, cost) == pytest.approx(ref - cost)  # 0.02295, not 0.0438
    assert book.savings(u, 1.0) == 0.0  # never negative
    assert book.cost("gone", u) == 0.0  # a backend the policy no longer has
