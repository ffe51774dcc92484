"""What a replay needs from the policy: backend views, prices and each model's scorer.

Built once from a loaded policy with the same functions the running gateway uses (so a
simulation routes exactly as ``gateway serve`` would), minus anything live: every backend is
assumed healthy, and nothing is called.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config.loader import LoadedPolicy
from gateway.routing.decide import BackendView
from gateway.routing.fallback import FallbackScorer
from gateway.routing.provenance import Governance

if TYPE_CHECKING:
    from gateway.backends.pricing import PriceBook

log = logging.getLogger("gateway.simulate")

__all__ = ["ModelScoring", "SimContext", "build_context"]


@dataclass(slots=True)
class ModelScoring:
    scorer: FallbackScorer | None  # None: no rule of the model reads the difficulty
    threshold: float
    note: str | None = None  # e.g. why the heuristic stands in for the learned scorer


@dataclass(slots=True)
class SimContext:
    loaded: LoadedPolicy
    views: dict[str, BackendView]
    pricing: PriceBook  # backends' and the savings reference's, as serve prices them
    governance: Governance
    scoring: dict[str, ModelScoring] = field(default_factory=dict)  # built on first use

    def self_hosted(self, backend: str) -> bool:
        return self.views[backend].self_hosted


def _scoring(name: str, loaded: LoadedPolicy, threshold: float | None) -> ModelScoring:
    from gateway.runtime import build_model_routing

    mr = build_model_routing(name, loaded.policy.models[name])
    note = None
    load_error = mr.scorer.load_error if mr.scorer is not None else None
    if load_error:
        note = (
            f"learned router artefact unusable ({load_error}); every score comes from the "
            "heuristic, as in serve"
        )
        log.warning("model %s: %s", name, note)
    base = mr.base_threshold if threshold is None else threshold
    return ModelScoring(mr.scorer, base, note)


def build_context(loaded: LoadedPolicy) -> SimContext:
    from gateway.backends.pricing import PriceBook
    from gateway.runtime import static_views

    policy = loaded.policy
    return SimContext(
        loaded=loaded,
        views=static_views(policy),
        pricing=PriceBook.of(policy),
        governance=Governance(policy),
    )


def model_scoring(ctx: SimContext, name: str, threshold: float | None = None) -> ModelScoring:
    """The model's scorer and threshold (``threshold`` overrides the policy's)."""
    got = ctx.scoring.get(name)
    if got is None:
        got = ctx.scoring[name] = _scoring(name, ctx.loaded, threshold)
    return got
