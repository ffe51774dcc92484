"""Whether a rule's ``when`` holds for a request: pure, shared by model rules and data rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.config.schema import Condition
from gateway.routing.features import RequestFeatures

if TYPE_CHECKING:
    from gateway.routing.decide import BackendView

__all__ = ["fits", "match_values", "matches"]


def _items(got: object) -> list[str]:
    """A header or metadata value as the list of values it holds: a list stays a list, a
    string is also read as a comma-separated list (repeated headers arrive joined by commas)."""
    if isinstance(got, list | tuple | set | frozenset):
        return [str(x).strip() for x in got]
    s = str(got)
    if "," in s:
        return [s.strip(), *(p.strip() for p in s.split(","))]
    return [s.strip()]


def match_values(want: str | list[str], got: object, ignore_case: bool = False) -> bool:
    """True if any value ``got`` holds is one of ``want`` (compared casefolded if asked)."""
    if got is None:
        return False
    wants = want if isinstance(want, list) else [want]
    items = _items(got)
    if ignore_case:
        folded = {w.strip().casefold() for w in wants}
        return any(i.casefold() in folded for i in items)
    return any(i in wants for i in items)


def fits(f: RequestFeatures, view: BackendView) -> bool:
    if view.context_window is None:
        return True
    tokens = f.exact_tokens.get(view.name, f.prompt_tokens)
    return tokens + f.max_output_tokens <= view.context_window


def matches(
    cond: Condition | None,
    f: RequestFeatures,
    backends: Mapping[str, BackendView],
    ignore_case: bool = False,
) -> bool:
    """Whether every field of ``cond`` holds for ``f`` (``any`` is an OR of sub-conditions;
    ``ignore_case`` set on a condition holds for its ``any`` branches too)."""
    if cond is None:
        return True
    ignore_case = ignore_case or cond.ignore_case
    if cond.needs is not None and not all(n in f.needs for n in cond.needs):
        return False
    if cond.prompt_tokens is not None and not cond.prompt_tokens.contains(f.prompt_tokens):
        return False
    if cond.exceeds_context_of is not None:
        view = backends.get(cond.exceeds_context_of)
        if view is None or view.context_window is None:
            return False
        if fits(f, view):
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
            if not match_values(want, f.headers.get(name), ignore_case):
                return False
    if cond.metadata is not None:
        for name, want in cond.metadata.items():
            if not match_values(want, f.metadata.get(name), ignore_case):
                return False
    if cond.any is not None and not any(matches(c, f, backends, ignore_case) for c in cond.any):
        return False
    return True
