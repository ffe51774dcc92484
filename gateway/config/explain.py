"""``gateway check``: a policy in words, and what it would do with typical requests."""

from __future__ import annotations

from gateway.backends.pricing import resolve_capabilities
from gateway.config.loader import LoadedPolicy
from gateway.config.schema import Provenance
from gateway.routing.decide import REFUSALS, BackendView, route
from gateway.routing.features import RequestFeatures
from gateway.routing.provenance import Governance

SAMPLES: list[tuple[str, dict]] = [
    ("everyday chat (300 tokens)", {"prompt_tokens": 300}),
    ("hard prompt (difficulty 0.95)", {"prompt_tokens": 300, "difficulty": 0.95}),
    ("image input", {"prompt_tokens": 800, "needs": frozenset({"vision"})}),
    ("tool calling", {"prompt_tokens": 500, "needs": frozenset({"tools"})}),
    ("JSON schema output", {"prompt_tokens": 400, "needs": frozenset({"json_schema"})}),
    ("very long context (150k tokens)", {"prompt_tokens": 150_000}),
    (
        "confidential data",
        {"prompt_tokens": 300, "headers": {"x-data-classification": "confidential"}},
    ),
    (
        "'Confidential, internal' header",
        {"prompt_tokens": 300, "headers": {"x-data-classification": "Confidential, internal"}},
    ),
]


def _views(loaded: LoadedPolicy) -> dict[str, BackendView]:
    from gateway.runtime import static_views

    return static_views(loaded.policy)


def explain(loaded: LoadedPolicy) -> str:
    p = loaded.policy
    views = _views(loaded)
    out = [f"policy {loaded.source}: OK", ""]
    for w in loaded.warnings:
        out.append(f"  ! {w}")
    out.append("backends:")
    for name, b in p.backends.items():
        v = views[name]
        state = "enabled" if v.enabled else f"DISABLED ({b.disabled_reason})"
        caps = [c for c in ("vision", "tools", "json_schema", "embeddings") if getattr(v, c)]
        where = "self-hosted" if b.self_hosted else "proprietary"
        out.append(
            f"  {name:<16} {b.kind:<18} {b.model:<36} {where:<12} ctx={v.context_window or '?'} "
            f"[{', '.join(caps) or 'text'}] {state}"
        )
        if b.labels:
            out.append(f"  {'':<16} labels: {', '.join(f'{k}={x}' for k, x in b.labels.items())}")
        if b.natives:  # callers of these protocols get their own body sent, untranslated
            note = ""
            if resolve_capabilities(b).reasoning is False:
                note = " (asking for reasoning or thinking: translated, the model does not reason)"
            out.append(f"  {'':<16} native: {', '.join(sorted(b.natives))}{note}")
        fleet = getattr(b, "fleet", None)  # openai_compatible backends only
        if fleet is not None:
            out.append(f"  {'':<16} fleet: {_fleet(fleet)}")
    gov = Governance(p)
    out.extend(_governance(loaded, gov))
    for mname, m in p.models.items():
        out.append("")
        out.append(f"model {mname!r}: {m.description}".rstrip(": "))
        for r in m.rules:
            out.append(f"  rule {r.name}: {_cond(r.when)} -> {_rule_route(r, m.fallbacks, p)}")
        if m.embeddings:
            out.append(f"  embeddings -> {', '.join(m.embeddings)}")
        if not m.rules:
            continue
        out.append("  would route:")
        for label, kw in SAMPLES:
            f = RequestFeatures(
                operation="chat",
                virtual_model=mname,
                difficulty_threshold=m.difficulty.threshold,
                **kw,
            )
            if m.uses_difficulty() and f.difficulty is None:
                f.difficulty = 0.1
            try:
                d = route(f, m, views, gov)
                note = "  (degraded: its backends are not configured)" if d.degraded else ""
                out.append(f"    {label:<34} -> {' > '.join(d.candidates)}  [{d.reason}]{note}")
            except REFUSALS as exc:
                out.append(f"    {label:<34} -> refused: {exc.message}")
    return "\n".join(out)


def _values(v: str | list[str]) -> str:
    return f"= {v}" if isinstance(v, str) else f"in ({', '.join(v)})"


def _range(r) -> str:
    ops = (("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<="))
    return " and ".join(f"{op} {getattr(r, k):g}" for k, op in ops if getattr(r, k) is not None)


def _cond(c) -> str:
    """A condition in words: ``needs vision``, ``header x-data-classification in (a, b)``."""
    if c is None:
        return "always"
    parts = []
    if c.needs:
        parts.append("needs " + " and ".join(c.needs))
    if c.prompt_tokens is not None:
        parts.append(f"prompt tokens {_range(c.prompt_tokens)}")
    if c.exceeds_context_of:
        parts.append(f"too long for {c.exceeds_context_of}")
    if c.difficulty == "hard":
        parts.append("difficulty hard (above the threshold)")
    elif c.difficulty is not None:
        parts.append(f"difficulty {_range(c.difficulty)}")
    if c.teams:
        parts.append("team in (" + ", ".join(c.teams) + ")")
    if c.keys:
        parts.append("key in (" + ", ".join(c.keys) + ")")
    case = " (any case)" if c.ignore_case else ""
    for name, v in (c.headers or {}).items():
        parts.append(f"header {name} {_values(v)}{case}")
    for name, v in (c.metadata or {}).items():
        parts.append(f"metadata {name} {_values(v)}{case}")
    if c.stream is not None:
        parts.append("streamed" if c.stream else "not streamed")
    if c.any:
        parts.append("(" + " or ".join(_cond(x) for x in c.any) + ")")
    return " and ".join(parts) or "always"


def _rule_route(r, fallbacks: list[str], p) -> str:
    """``a, b then c``: the rule's backends, then the fallbacks it adds (without repeats;
    for a self-hosted-only rule, only the self-hosted ones, since no other is ever tried)."""
    extra = [b for b in fallbacks if b not in r.route] if r.use_fallbacks else []
    if r.self_hosted_only:
        extra = [b for b in extra if p.backends[b].self_hosted]
    text = ", ".join(r.route) + (f" then {', '.join(extra)}" if extra else "")
    return text + (
        "  (self-hosted only: never a proprietary backend)" if r.self_hosted_only else ""
    )


def _fleet(f) -> str:
    where = [f"{len(f.endpoints)} endpoints"] if f.endpoints else []
    if f.dns is not None:
        where.append(f"DNS {f.dns.name}:{f.dns.port} every {f.dns.refresh_s:g} s")
    how = f.balance + (" + prefix affinity" if f.prefix_affinity.enabled else "")
    s = f.spill_over
    limits = [
        text
        for text, v in (
            (f"waiting > {s.max_waiting}", s.max_waiting),
            (f"KV >= {s.max_kv_cache_usage}", s.max_kv_cache_usage),
            (f"in flight >= {s.max_outstanding}", s.max_outstanding),
        )
        if v is not None
    ]
    spill = (
        f"; full when every replica has {' or '.join(limits)}: spill over, else {s.when_saturated}"
        if limits
        else "; no spill-over"
    )
    return f"{' and '.join(where)}, {how}{spill}"


def _prov(p: Provenance) -> str:
    parts = []
    if p.self_hosted_only:
        parts.append("self-hosted only")
    for k, v in p.deny.items():
        parts.append(f"never {k} {'|'.join(v) if isinstance(v, list) else v}")
    for k, v in p.require.items():
        parts.append(f"only {k} {'|'.join(v) if isinstance(v, list) else v}")
    if p.deny_backends:
        parts.append(f"never backends {', '.join(p.deny_backends)}")
    return "; ".join(parts)


def _governance(loaded: LoadedPolicy, gov: Governance) -> list[str]:
    """Provenance rules and data rules, each with the backends it leaves allowed."""
    p = loaded.policy
    out: list[str] = []
    rows: list[tuple[str, Provenance, str]] = []
    for d in p.data_rules:
        fb = f"; otherwise served by {', '.join(d.fallbacks)}" if d.fallbacks else ""
        rows.append((f"data rule {d.name} (every model) when {_cond(d.when)}", d.only, fb))
    for t, c in p.teams.items():
        if not c.provenance.is_empty():
            rows.append((f"team {t}", c.provenance, ""))
        if c.models is not None:
            out.append(f"  team {t}: models {', '.join(c.models)} only")
    for k in p.auth.keys:
        if not k.provenance.is_empty():
            rows.append((f"key {k.name}", k.provenance, ""))
    if not rows and not out:
        return []
    lines = ["", "provenance and data rules (bind fallbacks, retries, cascades and shadow calls):"]
    for head, prov, tail in rows:
        from gateway.routing.provenance import Applicable, Restriction

        app = Applicable((Restriction.compile(head, prov),), ())
        allowed = [n for n in p.backends if gov.why_not(app, n) is None]
        lines.append(f"  {head}: {_prov(prov)}{tail}")
        lines.append(f"    may reach: {', '.join(allowed) or 'NO BACKEND'}")
    return lines + out


def availability(loaded: LoadedPolicy) -> str:
    """One line for the start-up log: what can serve, what is not configured, and what that
    means for escalations, vision and embeddings."""
    p = loaded.policy
    views = _views(loaded)
    on = [n for n, v in views.items() if v.enabled]
    home = [n for n in on if views[n].self_hosted]
    away = [n for n in on if not views[n].self_hosted]
    off: dict[str, list[str]] = {}
    for n, b in p.backends.items():
        if not views[n].enabled:
            off.setdefault(b.disabled_reason or "disabled", []).append(n)
    parts = [
        "available: " + (", ".join([*(f"{n} (self-hosted)" for n in home), *away]) or "nothing")
    ]
    if off:
        reasons = "; ".join(f"{', '.join(ns)} ({why})" for why, ns in off.items())
        parts.append(f"not configured: {reasons}")
        if home:
            parts.append(
                "rules naming only those are served self-hosted where it can "
                "(header x-gateway-degraded)"
            )
    missing = [
        cap
        for cap, attr in (("vision", "vision"), ("embeddings", "embeddings"))
        if not any(getattr(views[n], attr) for n in on)
    ]
    if missing:
        parts.append(f"no backend for {' or '.join(missing)} (those requests get 503)")
    return "; ".join(parts)
