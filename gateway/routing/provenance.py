"""Provenance rules: which backends a request may reach, by team, key and data rules.

Pure and cheap: ``Governance`` is compiled once per policy (the runtime holds it) and
``allowed_backends(gov, features, views)`` answers, for one request, the set of backend names
that no rule refuses. ``route()`` applies it to every candidate (rule route, model fallbacks,
data-rule fallbacks), so retries and fallbacks stay inside it.

**Anything else that calls a backend for a request (shadow calls, cascades, probes that carry
client data) must call ``allowed_backends`` first and skip every backend not in the set.**
``Decision.allowed`` holds the same set for the request's decision.

A rule refuses a backend when:
- ``deny``: the backend carries one of the listed values of a label (``origin: cn``);
- ``require``: the backend lacks a listed label, or its value is not listed (``weights: open``);
- ``self_hosted_only``: the backend is proprietary;
- ``deny_backends``: the backend is named.
Labels compare case-insensitively.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.config.schema import DataRule, Policy, Provenance
from gateway.routing.conditions import matches
from gateway.routing.features import RequestFeatures

if TYPE_CHECKING:
    from gateway.routing.decide import BackendView

__all__ = ["Governance", "Restriction", "allowed_backends", "restrictions_for"]

EMPTY: frozenset[str] = frozenset()


def _values(v: str | list[str]) -> frozenset[str]:
    return frozenset(x.strip().casefold() for x in (v if isinstance(v, list) else [v]))


@dataclass(frozen=True, slots=True)
class Restriction:
    source: str  # names the rule: "team:federal", "key:bot", "data:confidential"
    deny: tuple[tuple[str, frozenset[str]], ...]
    require: tuple[tuple[str, frozenset[str]], ...]
    self_hosted_only: bool
    deny_backends: frozenset[str]

    @classmethod
    def compile(cls, source: str, p: Provenance) -> Restriction:
        return cls(
            source,
            tuple((k, _values(v)) for k, v in p.deny.items()),
            tuple((k, _values(v)) for k, v in p.require.items()),
            p.self_hosted_only,
            frozenset(p.deny_backends),
        )

    def why_not(self, name: str, labels: Mapping[str, str], self_hosted: bool) -> str | None:
        """Why this rule refuses backend ``name`` (labels already casefolded), or None."""
        if name in self.deny_backends:
            return "backend denied"
        if self.self_hosted_only and not self_hosted:
            return "self-hosted only"
        for key, bad in self.deny:
            if labels.get(key) in bad:
                return f"{key}: {labels[key]} denied"
        for key, good in self.require:
            if labels.get(key) not in good:
                return f"requires {key}: {'|'.join(sorted(good))}"
        return None


@dataclass(frozen=True, slots=True)
class Applicable:
    """The rules that bind one request, and where a data rule sends it when nothing else may."""

    restrictions: tuple[Restriction, ...]
    fallbacks: tuple[str, ...]


NONE = Applicable((), ())


class Governance:
    """A policy's provenance rules, compiled for the request path."""

    def __init__(self, policy: Policy) -> None:
        self.labels: dict[str, dict[str, str]] = {
            n: {k: v.strip().casefold() for k, v in b.labels.items()}
            for n, b in policy.backends.items()
        }
        self.self_hosted = {n: b.self_hosted for n, b in policy.backends.items()}
        self.all = frozenset(policy.backends)
        self.by_team = {
            t: Restriction.compile(f"team:{t}", c.provenance)
            for t, c in policy.teams.items()
            if not c.provenance.is_empty()
        }
        self.by_key = {
            k.name: Restriction.compile(f"key:{k.name}", k.provenance)
            for k in policy.auth.keys
            if not k.provenance.is_empty()
        }
        self.data_rules: tuple[tuple[DataRule, Restriction], ...] = tuple(
            (d, Restriction.compile(f"data:{d.name}", d.only)) for d in policy.data_rules
        )
        self.active = bool(self.by_team or self.by_key or self.data_rules)

    def why_not(self, applicable: Applicable, name: str) -> tuple[str, str] | None:
        """(rule source, why) of the first rule that refuses backend ``name``, or None."""
        labels = self.labels.get(name, {})
        hosted = self.self_hosted.get(name, False)
        for r in applicable.restrictions:
            why = r.why_not(name, labels, hosted)
            if why is not None:
                return r.source, why
        return None


def restrictions_for(
    gov: Governance, f: RequestFeatures, views: Mapping[str, BackendView]
) -> Applicable:
    """The rules that bind this request (team, key, matching data rules)."""
    if not gov.active:
        return NONE
    out: list[Restriction] = []
    fallbacks: list[str] = []
    team = gov.by_team.get(f.team)
    if team is not None:
        out.append(team)
    if f.key_name is not None:
        key = gov.by_key.get(f.key_name)
        if key is not None:
            out.append(key)
    for rule, r in gov.data_rules:
        if matches(rule.when, f, views):
            out.append(r)
            fallbacks.extend(rule.fallbacks)
    if not out:
        return NONE
    return Applicable(tuple(out), tuple(fallbacks))


def allowed_backends(
    gov: Governance, f: RequestFeatures, views: Mapping[str, BackendView]
) -> frozenset[str]:
    """Names of the backends no provenance rule refuses for this request (call this before any
    shadow or cascade call; capability and health are not checked here)."""
    applicable = restrictions_for(gov, f, views)
    if not applicable.restrictions:
        return gov.all
    return frozenset(n for n in gov.all if gov.why_not(applicable, n) is None)
