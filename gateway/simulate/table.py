"""The report as plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.simulate.aggregate import Group, Report
from gateway.simulate.curve import QUALITY_TARGET, Curve

__all__ = ["render_table", "usd", "pct"]

CURVE_STEP = 10  # print every 10th threshold (0.0, 0.1, ... 1.0)


def usd(x: float) -> str:
    if abs(x) >= 100:
        return f"${x:,.0f}"
    if abs(x) >= 1:
        return f"${x:,.2f}"
    return f"${x:.4f}"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def fmt(row: Sequence[str]) -> str:
        first = str(row[0]).ljust(widths[0])
        rest = [str(c).rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return indent + "  ".join([first, *rest]).rstrip()

    return [fmt(header), indent + "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]


def _groups(title: str, groups: Sequence[Group], backend: bool) -> list[str]:
    rows = []
    for g in groups:
        name = g.name + (
            (" (self-hosted)" if g.self_hosted else " (proprietary)") if backend else ""
        )
        rows.append(
            [
                name,
                f"{g.requests:,}",
                pct(g.request_share),
                f"{g.tokens:,}",
                pct(g.token_share),
                usd(g.cost_usd),
            ]
        )
    return [
        title,
        *_grid([title.split()[-1], "requests", "share", "tokens", "share", "cost"], rows),
    ]


def _cost(rep: Report) -> list[str]:
    m = rep.per_month
    month = rep.rate.requests_per_day is not None

    def row(name: str, x: float, extra: str = "") -> list[str]:
        out = [name, usd(x), usd(x / rep.routed * 1000) if rep.routed else "-"]
        return out + ([usd(m(x) or 0.0)] if month else []) + ([extra] if extra else [])

    header = ["", "this log", "per 1k requests"] + (["per month"] if month else [])
    rows = [
        row(f"all on {rep.reference_model} (baseline)", rep.baseline_usd),
        row("this policy", rep.cost_usd),
        row("savings", rep.savings_usd),
    ]
    lines = ["Cost", *_grid(header, rows)]
    lines.append(f"  savings: {pct(rep.savings_share)} of the baseline; rate: {rep.rate.source}")
    return lines


def _curve(c: Curve) -> list[str]:
    rows = []
    for p in c.points[::CURVE_STEP]:
        rows.append(
            [f"{p.threshold:.2f}", pct(p.escalated_share), pct(p.cost_share), pct(p.quality_share)]
        )
    o = c.operating
    rows.append(["policy <-", pct(o.escalated_share), pct(o.cost_share), pct(o.quality_share)])
    lines = [
        f"Cost-quality curve ({c.requests:,} labelled requests; all self-hosted quality "
        f"{pct(c.weak_quality)}, all proprietary {pct(c.strong_quality)})",
        *_grid(["threshold", "escalated", "cost vs baseline", "quality vs all-strong"], rows),
    ]
    t = c.cheapest_at_target
    if t is None:
        lines.append(
            f"  no threshold reaches {pct(QUALITY_TARGET)} of all-strong quality: the policy's other rules "
            f"cap it at {pct(c.points[0].quality_share)} (requests they keep on one side at every threshold)"
        )
    else:
        lines.append(
            f"  cheapest threshold reaching {pct(QUALITY_TARGET)} of all-strong quality: {t.threshold:.2f} "
            f"(escalates {pct(t.escalated_share)}, costs {pct(t.cost_share)} of the baseline)"
        )
    return lines


def render_table(rep: Report) -> str:
    lines = [
        f"Savings simulation: {rep.policy} on {rep.log}",
        f"  {rep.requests:,} requests, {rep.routed:,} routed; "
        f"{pct(rep.proprietary_request_share)} of requests and {pct(rep.proprietary_token_share)} of tokens go to proprietary backends",
        f"  token counts from the log's usage for {pct(rep.tokens_from_log_share)} of requests (the rest estimated)",
    ]
    lines += [f"  note: {n}" for n in rep.notes]
    if rep.scorer_failures:
        lines.append(
            f"  WARNING: the difficulty scorer failed on {rep.scorer_failures:,} requests (heuristic used, as in serve)"
        )
    if rep.error_count:
        lines.append(f"  {rep.error_count:,} requests no backend could take, e.g.:")
        lines += [f"    line {ln}: {why}" for ln, why in rep.errors]
    lines += [
        "",
        *_groups("Per backend", rep.by_backend, True),
        "",
        *_groups("Per rule", rep.by_rule, False),
        "",
        *_cost(rep),
    ]
    if rep.curve is not None:
        lines += ["", *_curve(rep.curve)]
    else:
        lines += [
            "",
            'No labels in the log: no cost-quality curve (add "label" to lines to get one)',
        ]
    return "\n".join(lines) + "\n"
