"""The routing decision: a pure function of (request features, policy model, backend views).

No I/O happens here. The pipeline gathers everything the decision needs (features, the
difficulty score if a rule asks for it, which circuits are open) and gets back an ordered
list of candidate backends with the reason, or a ``NoBackendError`` that says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config.schema import Condition, VirtualModel
from gateway.errors import NoBackendError
from gateway.routing.features import RequestFeatures

__all__ = ["BackendView", "Decision", "route", "matches"]


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


def _match_values(want: str | list[str], got: object) -> bool:
    if got is None:
        return False
    got_s = str(got)
    return got_s in want if isinstance(want, list) else got_s == want


def matches(
    cond: Condition | None, f: RequestFeatures, backends: Mapping[str, BackendView]
) -> bool:
    """Whether every field of ``cond`` holds for ``f`` (``any`` is an OR of sub-conditions)."""
    if cond is None:
        return True
    if cond.needs is not None and not all(n in f.needs for n in cond.needs):
        return False
    if cond.prompt_tokens is not None and not cond.prompt_tokens.contains(f.prompt_tokens):
        return False
    if cond.exceeds_context_of is not None:
        view = backends.get(cond.exceeds_context_of)
        if view is None or view.context_window is None:
            return False
        if _fits(f, view):
            return False
    if cond.difficulty is not None:
        if f.difficulty is None:
            return False
        if cond.difficulty == "hard":
            if f.difficulty <= f.difficulty_threshold:  # "hard" means strictly above
                return False
        elif not cond.difficulty.contains(f.difficulty):
            return False
    if cond.teams is not None and f.team not in cond.teams:
        return False
    if cond.keys is not None and f.key_name not in cond.keys:
        return False
    if cond.stream is not None and cond.stream != f.stream:
        return False
    if cond.headers is not None:
        for name, want in cond.headers.items():
            if not _match_values(want, f.headers.get(name)):
                return False
    if cond.metadata is not None:
        for name, want in cond.metadata.items():
            if not _match_values(want, f.metadata.get(name)):
                return False
    if cond.any is not None and not any(matches(c, f, backends) for c in cond.any):
        return False
    return True


def _fits(f: RequestFeatures, view: BackendView) -> bool:
    if view.context_window is None:
        return True
    tokens = f.exact_tokens.get(view.name, f.prompt_tokens)
    return tokens + f.max_output_tokens <= view.context_window


def _why_not(f: RequestFeatures, view: BackendView | None, self_hosted_only: bool) -> str | None:
    """Why a backend cannot take this request, or None if it can."""
    if view is None:
        return "unknown backend"
    if not view.enabled:
        return "disabled"
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
        return f"context window {view.context_window} too small"
    if not view.available:
        return "circuit open"
    return None


def _choose(
    reason: str,
    names: list[str],
    f: RequestFeatures,
    backends: Mapping[str, BackendView],
    self_hosted_only: bool,
) -> Decision:
    candidates: list[str] = []
    skipped: list[tuple[str, str]] = []
    for name in dict.fromkeys(names):  # keep order, drop repeats
        why = _why_not(f, backends.get(name), self_hosted_only)
        if why is None:
            candidates.append(name)
        else:
            skipped.append((name, why))
    if not candidates:
        detail = "; ".join(f"{n}: {w}" for n, w in skipped) or "no backends listed"
        prefix = (
            "request must stay on self-hosted backends and none can serve it"
            if self_hosted_only
            else "no backend can serve this request"
        )
        raise NoBackendError(f"{prefix} (rule {reason!r}: {detail})")
    return Decision(reason, tuple(candidates), self_hosted_only, tuple(skipped))


def route(f: RequestFeatures, model: VirtualModel, backends: Mapping[str, BackendView]) -> Decision:
    """First matching rule wins; its route then the model's fallbacks, filtered by built-in
    capability checks, data rules and live availability."""
    if f.operation == "embeddings":
        if not model.embeddings:
            raise NoBackendError(f"model {f.virtual_model!r} has no embeddings backends configured")
        # Data rules bind embeddings too: text marked self-hosted only never leaves.
        home = f.self_hosted_only or any(
            r.self_hosted_only and matches(r.when, f, backends) for r in model.rules
        )
        return _choose("embeddings", list(model.embeddings), f, backends, home)
    for rule in model.rules:
        if matches(rule.when, f, backends):
            names = list(rule.route) + (list(model.fallbacks) if rule.use_fallbacks else [])
            return _choose(
                rule.name, names, f, backends, f.self_hosted_only or rule.self_hosted_only
            )
    raise NoBackendError(f"no rule of model {f.virtual_model!r} matches this request")
