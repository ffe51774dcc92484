"""What a PromQL expression refers to: series names with their label matchers, and the labels
named in by/without/on/ignoring/group_* clauses.

Not a full PromQL parser (promtool checks syntax where it is installed); a tokenizer that is
exact about the parts a dashboard or rule can get wrong silently: a misspelt metric or label
name gives an empty graph, not an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "Refs",
    "Selector",
    "UnsupportedPromQL",
    "check_refs",
    "promql_refs",
    "substitute_grafana_vars",
]

# Prometheus' own grammar: keywords and modifiers that look like identifiers
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "start", "end", "atan2"}
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
TARGET_LABELS = frozenset({"job", "instance"})  # added by Prometheus at scrape time
GRAFANA_DEFAULTS = {"__rate_interval": "5m", "__interval": "1m", "__range": "6h"}

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*\b)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<matchop>=~|!~|!=|==|=)
  | (?P<punct>[{}(),])
  | (?P<op>[-+*/%^<>@]=?|>=|<=)
    """,
    re.VERBOSE,
)


class UnsupportedPromQL(ValueError):
    """The expression uses a form this reader does not handle (it says which)."""


@dataclass(frozen=True, slots=True)
class Selector:
    name: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value)


@dataclass(slots=True)
class Refs:
    selectors: list[Selector] = field(default_factory=list)
    grouping_labels: set[str] = field(default_factory=set)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise UnsupportedPromQL(f"cannot read {expr[pos : pos + 20]!r} in {expr!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def promql_refs(expr: str) -> Refs:
    toks = _tokens(expr)
    refs, i = Refs(), 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "punct" and text == "{":
            raise UnsupportedPromQL(f"selector without a metric name in {expr!r}")
        if kind != "ident":
            i += 1
            continue
        if text in GROUPING:
            if nxt == "(":  # a label list
                j = i + 2
                while toks[j][1] != ")":
                    if toks[j][0] == "ident":
                        refs.grouping_labels.add(toks[j][1])
                    j += 1
                i = j + 1
            else:  # group_left without labels
                i += 1
            continue
        if text in KEYWORDS or nxt in ("(", "by", "without"):  # keyword, function or aggregation
            i += 1
            continue
        matchers: list[tuple[str, str, str]] = []
        i += 1
        if nxt == "{":
            i += 1
            while toks[i][1] != "}":
                if toks[i][1] == ",":
                    i += 1
                    continue
                (lk, label), (ok, op), (vk, value) = toks[i], toks[i + 1], toks[i + 2]
                if lk != "ident" or ok != "matchop" or vk != "string":
                    raise UnsupportedPromQL(f"unexpected matcher near {label!r} in {expr!r}")
                matchers.append((label, op, value[1:-1]))
                i += 3
            i += 1
        refs.selectors.append(Selector(text, tuple(matchers)))
    return refs


def substitute_grafana_vars(expr: str, values: dict[str, str]) -> str:
    """Replace ``$name`` and ``${name}`` by ``values`` (then Grafana's own interval variables)."""
    table = {**GRAFANA_DEFAULTS, **values}

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in table:
            raise UnsupportedPromQL(f"unknown dashboard variable ${name} in {expr!r}")
        return table[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)


def check_refs(expr: str, series: dict[str, frozenset[str]]) -> list[str]:
    """Problems with ``expr`` against ``series`` (series name -> its label names): unknown
    names, matchers on labels the series does not have, grouping by labels none of its
    series have. Empty when all is well."""
    refs = promql_refs(expr)
    problems, available = [], set(TARGET_LABELS)
    for sel in refs.selectors:
        labels = series.get(sel.name)
        if labels is None:
            problems.append(f"unknown series {sel.name!r}")
            continue
        available |= labels
        for label, _op, _value in sel.matchers:
            if label not in labels | TARGET_LABELS:
                problems.append(f"{sel.name!r} has no label {label!r} (it has {sorted(labels)})")
    for label in sorted(refs.grouping_labels - available):
        problems.append(
            f"grouping by {label!r}, which none of {[s.name for s in refs.selectors]} has"
        )
    if not refs.selectors:
        problems.append("no series referenced")
    return problems
