"""The report as one self-contained HTML page: inline CSS and SVG, no scripts, nothing fetched."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from gateway.simulate.aggregate import Group, Report
from gateway.simulate.curve import QUALITY_TARGET, Curve
from gateway.simulate.svg import PALETTE, Bar, Segment, Series, bar_chart, line_chart, stacked_bars
from gateway.simulate.table import CURVE_STEP, pct, usd

__all__ = ["render_html"]

BASELINE_COLOR = "#888888"
CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1000px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:8px;padding:.8rem 1rem;min-width:180px}
.card b{display:block;font-size:1.6rem}.muted{color:#666;font-size:.9rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.25rem .7rem;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}.op{background:#fff3f3;font-weight:bold}
svg{width:100%;max-width:820px;height:auto;display:block}
ul.notes li{margin:.45rem 0;line-height:1.45}ul.notes ul li{margin:.2rem 0;font-size:.92rem}
.explain{background:#fffbe6;border-left:4px solid #e0b000;padding:.6rem 1rem;line-height:1.45}
"""


def _backend_colors(groups: Sequence[Group]) -> dict[str, str]:
    own = [g.name for g in groups if g.self_hosted]
    other = [g.name for g in groups if not g.self_hosted]
    greens = ("#2e8b57", "#3cb371", "#66cdaa", "#8fbc8f")
    warms = ("#d2691e", "#4682b4", "#8a2be2", "#b8860b", "#c71585", "#008b8b")
    colors = {n: greens[i % len(greens)] for i, n in enumerate(own)}
    colors.update({n: warms[i % len(warms)] for i, n in enumerate(other)})
    return colors


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], marked: int | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, r in enumerate(rows):
        cls = ' class="op"' if i == marked else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _group_rows(groups: Sequence[Group]) -> list[list[str]]:
    return [
        [
            g.name,
            f"{g.requests:,}",
            pct(g.request_share),
            f"{g.tokens:,}",
            pct(g.token_share),
            usd(g.cost_usd),
        ]
        for g in groups
    ]


def _cards(rep: Report) -> str:
    month = rep.per_month(rep.savings_usd)
    cards = [
        ("savings", pct(rep.savings_share), f"of the all-{rep.reference_model} cost"),
        (
            "per month",
            usd(month) if month is not None else "n/a",
            rep.rate.source if month is not None else "no rate: see notes",
        ),
        (
            "to proprietary",
            pct(rep.proprietary_request_share),
            f"of requests ({pct(rep.proprietary_token_share)} of tokens)",
        ),
    ]
    if rep.curve is not None:
        cards.append(
            (
                "quality",
                pct(rep.curve.operating.quality_share),
                "of the all-proprietary quality (labelled requests)",
            )
        )
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card">{escape(t)}<b>{escape(v)}</b><span class="muted">{escape(s)}</span></div>'
            for t, v, s in cards
        )
        + "</div>"
    )


def _shares(rep: Report, colors: dict[str, str]) -> str:
    req = [
        Bar(g.name, g.request_share, pct(g.request_share), colors[g.name]) for g in rep.by_backend
    ]
    tok = [Bar(g.name, g.token_share, pct(g.token_share), colors[g.name]) for g in rep.by_backend]
    rules = [
        Bar(g.name, g.request_share, pct(g.request_share), PALETTE[i % len(PALETTE)])
        for i, g in enumerate(rep.by_rule)
    ]
    return (
        "<h2>Where requests go</h2>"
        f"<p class=muted>Share of requests per backend (green: self-hosted)</p>{bar_chart('share of requests per backend', req)}"
        f"<p class=muted>Share of tokens per backend</p>{bar_chart('share of tokens per backend', tok)}"
        + _table(
            ["backend", "requests", "share", "tokens", "share", "cost"], _group_rows(rep.by_backend)
        )
        + f"<p class=muted>Share of requests per rule</p>{bar_chart('share of requests per rule', rules)}"
        + _table(["rule", "requests", "share", "tokens", "share", "cost"], _group_rows(rep.by_rule))
    )


def _cost(rep: Report, colors: dict[str, str]) -> str:
    def text(x: float) -> str:
        m = rep.per_month(x)
        return usd(x) + (f"  ({usd(m)}/month)" if m is not None else "")

    rows = [
        (
            f"all on {rep.reference_model}",
            [Segment(f"{rep.reference_model} (baseline)", rep.baseline_usd, BASELINE_COLOR)],
            text(rep.baseline_usd),
        ),
        (
            "this policy",
            [Segment(g.name, g.cost_usd, colors[g.name]) for g in rep.by_backend],
            text(rep.cost_usd),
        ),
    ]
    return (
        "<h2>Cost</h2>"
        + stacked_bars("projected cost against the all-proprietary baseline", rows)
        + f"<p>Savings: <b>{escape(usd(rep.savings_usd))}</b> on this log ({escape(pct(rep.savings_share))}); "
        f"rate: {escape(rep.rate.source)}.</p>"
    )


def _curve(c: Curve) -> str:
    pts = sorted(((p.cost_share, p.quality_share) for p in c.points), key=lambda xy: (xy[0], xy[1]))
    lo, hi = c.points[-1], c.points[0]  # threshold 1.0 (least escalation) and 0.0 (most)
    y_min = max(0.0, math.floor((min(p.quality_share for p in c.points) - 0.02) * 10) / 10)
    y_max = max(1.0, max(p.quality_share for p in c.points))
    o = c.operating
    chart = line_chart(
        "cost-quality curve over thresholds",
        [
            Series("threshold sweep", pts, PALETTE[0], markers=True),
            Series(
                "random routing",
                [(lo.cost_share, lo.quality_share), (hi.cost_share, hi.quality_share)],
                BASELINE_COLOR,
                dashed=True,
            ),
        ],
        x_label="cost, as a share of the all-proprietary baseline",
        y_label="quality, as a share of all-proprietary quality",
        marks=[(o.cost_share, o.quality_share, f"policy: {pct(o.escalated_share)} escalated")],
        y_range=(y_min, y_max),
        h_lines=[(QUALITY_TARGET, f"{pct(QUALITY_TARGET)} of all-proprietary quality")],
    )
    rows = [
        [f"{p.threshold:.2f}", pct(p.escalated_share), pct(p.cost_share), pct(p.quality_share)]
        for p in c.points[::CURVE_STEP]
    ]
    rows.append(["policy", pct(o.escalated_share), pct(o.cost_share), pct(o.quality_share)])
    t = c.cheapest_at_target
    target = (
        f"<p>Cheapest threshold reaching {pct(QUALITY_TARGET)} of all-proprietary quality: <b>{t.threshold:.2f}</b> "
        f"(escalates {pct(t.escalated_share)}, costs {pct(t.cost_share)} of the baseline).</p>"
        if t is not None
        else f"<p>No threshold reaches {pct(QUALITY_TARGET)} of all-proprietary quality: the policy's other rules "
        f"cap it at {pct(c.points[0].quality_share)} (requests they keep on one side at every threshold).</p>"
    )
    gain = c.gain_over_random()
    explain = (
        f'<p class="explain"><b>The curve lies below the random-routing line</b> (by '
        f"{-gain * 100:.1f} percentage points of quality on average). The dashed line is what escalating the same share "
        "of requests <i>at random</i> would keep; below it, the difficulty score sends the "
        "requests the self-hosted model answers well to the proprietary side more often than "
        "chance, and keeps ones it answers badly. The scorer does not rank this traffic: do not "
        "tune a threshold on it. Train the router on your own labelled traffic "
        "(<code>gateway router train</code>), re-run this report, and until the curve rises "
        "above the line route by rules (vision, context length, teams, headers) instead.</p>"
        if gain < 0
        else ""
    )
    return (
        f"<h2>Cost and quality</h2><p class=muted>{c.requests:,} labelled requests. Quality: share answered well "
        f"(all self-hosted: {pct(c.weak_quality)}, all proprietary: {pct(c.strong_quality)}).</p>"
        + chart
        + explain
        + target
        + _table(
            ["threshold", "escalated", "cost vs baseline", "quality vs all-strong"],
            rows,
            marked=len(rows) - 1,
        )
    )


def render_html(rep: Report) -> str:
    colors = _backend_colors(rep.by_backend)
    notes = "".join(f"<li>{escape(n)}</li>" for n in rep.notes)
    if rep.scorer_failures:
        notes += f"<li><b>the difficulty scorer failed on {rep.scorer_failures:,} requests</b> (heuristic used, as in serve)</li>"
    if rep.error_count:
        items = "".join(f"<li>line {ln}: {escape(why)}</li>" for ln, why in rep.errors)
        shown = "" if len(rep.errors) >= rep.error_count else f" ({len(rep.errors)} shown)"
        notes += (
            f"<li>{rep.error_count:,} requests no backend could take{shown}:<ul>{items}</ul></li>"
        )
    curve = (
        _curve(rep.curve)
        if rep.curve is not None
        else "<h2>Cost and quality</h2><p>No labels in the log: no cost-quality curve.</p>"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Savings simulation: {escape(rep.policy)}</title><style>{CSS}</style></head><body>"
        f"<h1>Savings simulation</h1><p class=muted>policy {escape(rep.policy)} on {escape(rep.log)}: "
        f"{rep.requests:,} requests, {rep.routed:,} routed; token counts from the log for "
        f"{escape(pct(rep.tokens_from_log_share))} of requests.</p>"
        + _cards(rep)
        + _shares(rep, colors)
        + _cost(rep, colors)
        + curve
        + f'<h2>Notes</h2><ul class="notes">{notes}</ul></body></html>\n'
    )
