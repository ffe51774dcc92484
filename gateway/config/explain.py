"""``gateway check``: a policy in words, and what it would do with typical requests."""

from __future__ import annotations

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
    gov = Governance(p)
    out.extend(_governance(loaded, gov))
    for mname, m in p.models.items():
        out.append("")
        out.append(f"model {mname!r}: {m.description}".rstrip(": "))
        for r in m.rules:
            flag = "  (self-hosted only)" if r.self_hosted_only else ""
            fb = f" then {', '.join(m.fallbacks)}" if r.use_fallbacks and m.fallbacks else ""
            out.append(f"  rule {r.name}: {_cond(r.when)} -> {', '.join(r.route)}{fb}{flag}")
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
                out.append(f"    {label:<34} -> {' > '.join(d.candidates)}  [{d.reason}]")
            except REFUSALS as exc:
                out.append(f"    {label:<34} -> refused: {exc.message}")
    return "\n".join(out)


def _cond(c) -> str:
    if c is None:
        return "always"
    parts = []
    for field_name in type(c).model_fields:
        v = getattr(c, field_name)
        if v is None or (field_name == "ignore_case" and not v):
            continue
        if field_name == "ignore_case":
            parts.append("(values ignore case)")
            continue
        if field_name == "any":
            parts.append("any of (" + " | ".join(_cond(x) for x in v) + ")")
            continue
        if hasattr(v, "model_dump"):
            v = {k: x for k, x in v.model_dump().items() if x is not None}
        parts.append(f"{field_name}={v}")
    return " and ".join(parts)


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
