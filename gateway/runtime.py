"""Everything built from one policy: backends, breakers, prices, scorers, keys.

A ``Runtime`` is immutable once built. A reload builds a new one (reusing the backends and
breakers whose configuration did not change, so pools and circuit state survive) and swaps
it in with one assignment; requests in flight finish on the runtime they started with.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from gateway.auth import KeyRing
from gateway.backends.base import Backend
from gateway.backends.pricing import PriceBook, resolve_capabilities
from gateway.backends.registry import build_backend
from gateway.backends.resilience import CircuitBreaker
from gateway.config.loader import LoadedPolicy
from gateway.config.schema import BackendConfig, Policy, VirtualModel
from gateway.routing.calibrate import calibrate_share
from gateway.routing.decide import BackendView
from gateway.routing.fallback import FallbackScorer
from gateway.routing.heuristic import HeuristicScorer
from gateway.routing.provenance import Governance

log = logging.getLogger("gateway.runtime")

__all__ = ["Runtime", "ModelRouting", "backend_view", "static_views"]


@dataclass(slots=True)
class ModelRouting:
    """Per virtual model: its scorer (only if a rule needs one), behind the one fallback."""

    scorer: FallbackScorer | None
    base_threshold: float


def build_scorer(scorer: str, artifact: str | None) -> FallbackScorer:
    """The policy's scorer wrapped in FallbackScorer. An unusable learned artefact (or a
    missing install) still yields a scorer: every score then comes from the heuristic, is
    counted, and ``load_error`` says why, so a gateway still starts."""
    if scorer == "heuristic":
        return FallbackScorer(HeuristicScorer())
    from gateway.router.errors import RouterError

    try:
        from gateway.router.scorer import LearnedScorer

        return FallbackScorer(LearnedScorer.load(artifact))
    except (ImportError, RouterError) as exc:
        log.error("router artefact unusable, scoring with the heuristic: %s", exc)
        return FallbackScorer(None, load_error=str(exc))


def build_model_routing(name: str, model: VirtualModel) -> ModelRouting:
    if not model.uses_difficulty():
        return ModelRouting(None, model.difficulty.threshold)
    cfg = model.difficulty
    t0 = time.perf_counter()
    if cfg.scorer == "learned":
        log.info("model %s: loading the learned difficulty router (takes a few seconds)", name)
    scorer = build_scorer(cfg.scorer, cfg.artifact)
    threshold = cfg.threshold
    if cfg.escalate_share is not None:
        threshold = calibrate_share(scorer, cfg.escalate_share, cfg.calibration_sample)
        log.info(
            "model %s: threshold %.3f escalates %.0f%% of the calibration sample",
            name,
            threshold,
            100 * cfg.escalate_share,
        )
    if cfg.scorer == "learned":
        log.info("model %s: learned router ready in %.1f s", name, time.perf_counter() - t0)
    return ModelRouting(scorer, threshold)


def backend_view(name: str, cfg: BackendConfig) -> BackendView:
    """Static routing view of a backend: capabilities from the policy over litellm's map."""
    caps = resolve_capabilities(cfg)
    return BackendView(
        name=name,
        self_hosted=cfg.self_hosted,
        enabled=cfg.enabled and cfg.disabled_reason is None,
        chat=caps.chat if caps.chat is not None else not bool(caps.embeddings),
        vision=bool(caps.vision),
        tools=caps.tools if caps.tools is not None else True,
        json_schema=bool(caps.json_schema),
        embeddings=bool(caps.embeddings),
        context_window=caps.context_window,
    )


def static_views(policy: Policy) -> dict[str, BackendView]:
    return {name: backend_view(name, cfg) for name, cfg in policy.backends.items()}


class Runtime:
    def __init__(self, loaded: LoadedPolicy, previous: Runtime | None = None) -> None:
        self.loaded = loaded
        self.policy = policy = loaded.policy
        self.keys = KeyRing(policy.auth)
        self.policy_keys = {k.name: k for k in policy.auth.keys}  # key name -> its limits
        self.governance = Governance(policy)  # provenance rules, compiled
        self.backends: dict[str, Backend] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.configs: dict[str, BackendConfig] = {}
        self._static_views: dict[str, BackendView] = {}
        for name, cfg in policy.backends.items():
            self.configs[name] = cfg
            enabled = cfg.enabled and cfg.disabled_reason is None
            old = previous.configs.get(name) if previous else None
            if previous is not None and old == cfg and name in previous.backends:
                self.backends[name] = previous.backends[name]
                self.breakers[name] = previous.breakers[name]
            elif enabled:
                self.backends[name] = build_backend(name, cfg)
                self.breakers[name] = CircuitBreaker(cfg.circuit_breaker)
            self._static_views[name] = backend_view(name, cfg)
        self.pricing = PriceBook.of(policy)  # every cost and saving is priced by it
        self.routing = {name: build_model_routing(name, m) for name, m in policy.models.items()}
        self.tokenizers = {n: c.tokenizer for n, c in policy.backends.items() if c.tokenizer}
        self._views_key: tuple[bool, ...] | None = None
        self._views: dict[str, BackendView] = self._static_views

    def views(self) -> dict[str, BackendView]:
        """Backend views with live availability; rebuilt only when a circuit changes state."""
        key = tuple(b.state != "open" for b in self.breakers.values())
        if key != self._views_key:
            views = dict(self._static_views)
            for name, ok in zip(self.breakers, key, strict=True):
                if not ok:
                    views[name] = replace(views[name], available=False)
            self._views, self._views_key = views, key
        return self._views

    def retired_backends(self, new: Runtime) -> list[Backend]:
        """Backends of this runtime that ``new`` no longer uses (to close after a reload)."""
        kept = {id(b) for b in new.backends.values()}
        return [b for b in self.backends.values() if id(b) not in kept]

    async def close(self) -> None:
        for b in self.backends.values():
            await b.close()
