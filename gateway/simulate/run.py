"""One simulation, end to end: policy + log -> Report. No backend is ever called."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gateway.simulate.aggregate import Report, summarize
from gateway.simulate.context import build_context
from gateway.simulate.log import read_log
from gateway.simulate.policy_env import load_for_simulation
from gateway.simulate.replay import DEFAULT_COMPLETION_TOKENS, replay

__all__ = ["simulate"]


def simulate(
    policy: str | Path,
    requests: str | Path,
    *,
    env: Mapping[str, str],
    model: str | None = None,
    threshold: float | None = None,
    requests_per_day: float | None = None,
    all_backends: bool = True,
    progress: bool | None = None,
) -> Report:
    """Replay the log ``requests`` through ``policy``. Raises PolicyError, LogError, or
    ValueError for a ``model`` the policy does not define."""
    sim = load_for_simulation(policy, env, all_backends)
    pol = sim.loaded.policy
    if model is not None and model not in pol.models:
        raise ValueError(
            f"model {model!r} is not defined in {policy} (it has: {', '.join(pol.models)})"
        )
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError("threshold must be in [0, 1]")
    reqs = read_log(requests)
    ctx = build_context(sim.loaded)
    routed, failures = replay(ctx, reqs, model=model, threshold=threshold, progress=progress)
    notes = []
    if sim.enabled_for_simulation:
        notes.append(
            f"backends {', '.join(sim.enabled_for_simulation)} are disabled in this environment "
            "(unset variables) and treated as enabled for the simulation (--no-env-all-backends to keep them off)"
        )
    notes.append(
        "each request goes to its decision's first candidate: every backend assumed healthy, no cache hits"
    )
    for name, ms in ctx.scoring.items():
        if ms.scorer is not None:
            notes.append(
                f"model {name}: difficulty scorer {ms.scorer.name}, hard from {ms.threshold:.3f}"
            )
        if ms.note:
            notes.append(f"model {name}: {ms.note}")
        cap = pol.models[name].difficulty.spend_cap_usd
        if ms.scorer is not None and cap is not None:
            raised = sum(
                1
                for r in routed
                if r.virtual_model == name
                and r.threshold is not None
                and r.threshold > ms.threshold
            )
            notes.append(
                f"model {name}: the spend cap (${cap:g} per {pol.models[name].difficulty.spend_cap_period}) "
                f"raised the threshold for {raised:,} requests (paced by the log's timestamps)"
            )
    if any(r.req.completion_tokens is None for r in routed):
        notes.append(
            f"completion tokens missing from the log are estimated as min(max_tokens, {DEFAULT_COMPLETION_TOKENS})"
        )
    return summarize(
        routed,
        policy=str(policy),
        log=str(requests),
        reference_model=pol.savings.reference_model,
        scorer_failures=failures,
        requests_per_day=requests_per_day,
        notes=notes,
    )
