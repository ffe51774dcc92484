"""The routing decision: a pure function of (request features, policy model, backend views).

No I/O happens here. The pipeline gathers everything the decision needs (features, the
difficulty score if a rule asks for it, which circuits are open) and gets back an ordered
list of candidate backends with the reason, or one of ``REFUSALS`` that says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config.schema import VirtualModel
from gateway.errors import ContextLengthError, NoBackendError, ProvenanceDeniedError
from gateway.routing.conditions import fits as _fits
from gateway.routing.conditions import matches
from gateway.routing.features import RequestFeatures
from gateway.routing.provenance import NONE, Applicable, Governance, restrictions_for

__all__ = ["BackendView", "Decision", "REFUSALS", "backend_refusal", "route", "matches"]

# What route() raises when nothing can take a request: nothing eligible (503), too long for
# every window (400), or a provenance rule forbids every candidate (403).
REFUSALS = (NoBackendError, ContextLengthError, ProvenanceDeniedError)

# The one reason a backend is skipped that can change by itself (the circuit closes again);
# every other says something about the request or the configuration.
CIRCUIT_OPEN = "circuit open"
TOO_LONG = "context window"
DISABLED = "disabled"  # not configured (its key variable is unset) or enabled: false


@dataclass(slots=True, frozen=True)
class BackendView:
    """What routing needs to know of a backend: static capabilities plus live state."""

    name: str
    self_hosted: bool
    enabled: bool = True
    chat: bool = True
    vision: bool = False
    tools: bool = True
    json_schema: bool = False
    embeddings: bool = False
    context_window: int | None = None
    available: bool = True  # False: circuit open (and not due for a half-open probe)


@dataclass(slots=True, frozen=True)
class Decision:
    reason: str  # the rule's name (or a built-in reason) - goes to x-gateway-route-reason
    candidates: tuple[str, ...]  # backends to try, in order
    self_hosted_only: bool = False
    skipped: tuple[tuple[str, str], ...] = ()  # (backend, why) for logs and errors
    # provenance rules that removed a candidate: (backend, rule source such as "team:federal")
    refused: tuple[tuple[str, str], ...] = ()
    # backends no provenance rule refuses for this request (None: no rule applies, all may):
    # shadow calls and cascades must stay inside this set
    allowed: frozenset[str] | None = None
    # every backend the rule names is unconfigured (disabled): served by a self-hosted one
    degraded: bool = False


def _why_not(f: RequestFeatures, view: BackendView | None, self_hosted_only: bool) -> str | None:
    """Why a backend cannot take this request, or None if it can."""
    if view is None:
        return "unknown backend"
    if not view.enabled:
        return DISABLED
    if self_hosted_only and not view.self_hosted:
        return "proprietary (request must stay self-hosted)"
    if f.operation == "embeddings":
        if not view.embeddings:
            return "no embeddings"
    elif not view.chat:
        return "not a chat/completions model"
    if "vision" in f.needs and not view.vision:
        return "no vision"
    if "tools" in f.needs and not view.tools:
        return "no tool calling"
    if "json_schema" in f.needs and not view.json_schema:
        return "no json_schema"
    if f.operation != "embeddings" and not _fits(f, view):
        return f"{TOO_LONG} {view.context_window} too small"
    if not view.available:
        return CIRCUIT_OPEN
    return None


def backend_refusal(
    f: RequestFeatures, view: BackendView | None, self_hosted_only: bool
) -> str | None:
    """Why a backend cannot take this request (None: it can): the checks route() applies
    to every candidate, for callers outside routing (shadow evaluation)."""
    return _why_not(f, view, self_hosted_only)


def _choose(
    reason: str,
    names: list[str],
    f: RequestFeatures,
    backends: Mapping[str, BackendView],
    self_hosted_only: bool,
    gov: Governance | None = None,
    applicable: Applicable = NONE,
) -> Decision:
    candidates: list[str] = []
    skipped: list[tuple[str, str]] = []
    refused: list[tuple[str, str]] = []
    binding = gov is not None and bool(applicable.restrictions)

    def consider(name: str) -> None:
        why = _why_not(f, backends.get(name), self_hosted_only)
        if why is None and gov is not None and binding:
            denied = gov.why_not(applicable, name)
            if denied is not None:
                refused.append((name, denied[0]))
                why = f"refused by {denied[0]} ({denied[1]})"
        if why is None:
            candidates.append(name)
        else:
            skipped.append((name, why))

    listed = list(dict.fromkeys([*names, *applicable.fallbacks]))  # keep order, drop repeats
    for name in listed:
        consider(name)
    degraded = False
    if not candidates and listed and all(w == DISABLED for _, w in skipped):
        # Nothing the rule names is configured (a first run without provider keys): the
        # self-hosted backends that can serve it do, marked and counted by the pipeline,
        # instead of a 503 for every escalation.
        for name, view in backends.items():
            if view.self_hosted and name not in listed:
                consider(name)
        degraded = bool(candidates)
    allowed = None
    if gov is not None and binding:
        allowed = frozenset(n for n in gov.all if gov.why_not(applicable, n) is None)
    if not candidates:
        if refused and len(refused) == len(skipped):
            detail = "; ".join(f"{n}: {w}" for n, w in skipped)
            rules = ", ".join(dict.fromkeys(r for _, r in refused))
            raise ProvenanceDeniedError(
                f"policy rule {rules} forbids every backend that could serve this request "
                f"(rule {reason!r}: {detail})",
                rules=tuple(dict.fromkeys(r for _, r in refused)),
            )
        raise _nothing_eligible(reason, skipped, self_hosted_only, f.operation)
    return Decision(
        reason,
        tuple(candidates),
        self_hosted_only,
        tuple(skipped),
        tuple(refused),
        allowed,
        degraded,
    )


def _nothing_eligible(
    reason: str, skipped: list[tuple[str, str]], self_hosted_only: bool, operation: str
) -> NoBackendError | ContextLengthError:
    """Why no candidate is left: retrying helps only if a circuit was open. When nothing
    else stood in the way but length, the request is too long for every backend: a 400."""
    detail = "; ".join(f"{n}: {w}" for n, w in skipped) or "no backends listed"
    transient = any(w == CIRCUIT_OPEN for _, w in skipped)
    prefix = (
        "request must stay on self-hosted backends and none can serve it"
        if self_hosted_only
        else "no backend can serve this request"
    )
    if not transient and any(w.startswith(TOO_LONG) for _, w in skipped):
        return ContextLengthError(
            f"{prefix}: the prompt plus max_tokens exceeds every eligible context window "
            f"(rule {reason!r}: {detail}); shorten the input or lower max_tokens",
            param="messages" if operation == "chat" else "prompt",
        )
    return NoBackendError(
        f"{prefix} (rule {reason!r}: {detail})", should_retry=None if transient else False
    )


def route(
    f: RequestFeatures,
    model: VirtualModel,
    backends: Mapping[str, BackendView],
    gov: Governance | None = None,
) -> Decision:
    """First matching rule wins; its route then the model's fallbacks (then the fallbacks of
    matching policy-level data rules), filtered by built-in capability checks, data rules,
    provenance rules (``gov``) and live availability."""
    applicable = restrictions_for(gov, f, backends) if gov is not None else NONE
    if f.operation == "embeddings":
        if not model.embeddings:
            raise NoBackendError(
                f"model {f.virtual_model!r} has no embeddings backends configured",
                should_retry=False,
            )
        # Data rules bind embeddings too: text marked self-hosted only never leaves.
        home = f.self_hosted_only or any(
            r.self_hosted_only and matches(r.when, f, backends) for r in model.rules
        )
        return _choose("embeddings", list(model.embeddings), f, backends, home, gov, applicable)
    for rule in model.rules:
        if matches(rule.when, f, backends):
            names = list(rule.route) + (list(model.fallbacks) if rule.use_fallbacks else [])
            return _choose(
                rule.name,
                names,
                f,
                backends,
                f.self_hosted_only or rule.self_hosted_only,
                gov,
                applicable,
            )
    raise NoBackendError(
        f"no rule of model {f.virtual_model!r} matches this request", should_retry=False
    )
