"""Inline SVG charts for the HTML report: plain strings, no JavaScript, nothing fetched."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = [
    "Bar",
    "Segment",
    "bar_chart",
    "stacked_bars",
    "Series",
    "line_chart",
    "SELF_HOSTED",
    "PROPRIETARY",
    "PALETTE",
]

SELF_HOSTED = "#2e8b57"
PROPRIETARY = "#d2691e"
PALETTE = ("#4682b4", "#2e8b57", "#d2691e", "#8a2be2", "#b8860b", "#c71585", "#008b8b", "#696969")
FONT = 'font-family="system-ui, sans-serif" font-size="14"'
ROW_H, BAR_H, LABEL_W, VALUE_W, LEGEND_W = 26, 16, 190, 110, 160


@dataclass(slots=True, frozen=True)
class Bar:
    label: str
    value: float  # in [0, max]
    text: str  # shown at the end of the bar
    color: str = PALETTE[0]


@dataclass(slots=True, frozen=True)
class Segment:
    label: str
    value: float
    color: str


def _open(width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" {FONT}>'
        f"<title>{escape(title)}</title>"
    )


def bar_chart(title: str, bars: Sequence[Bar], max_value: float = 1.0, width: int = 640) -> str:
    """Horizontal bars, one per row, scaled to ``max_value``."""
    plot_w = width - LABEL_W - VALUE_W
    height = ROW_H * len(bars) + 10
    out = [_open(width, height, title)]
    for i, b in enumerate(bars):
        y = 5 + i * ROW_H
        w = 0.0 if max_value <= 0 else max(0.0, min(1.0, b.value / max_value)) * plot_w
        out.append(
            f'<text x="{LABEL_W - 8}" y="{y + BAR_H - 3}" text-anchor="end">{escape(b.label)}</text>'
        )
        out.append(
            f'<rect x="{LABEL_W}" y="{y}" width="{w:.1f}" height="{BAR_H}" fill="{b.color}"/>'
        )
        out.append(f'<text x="{LABEL_W + w + 6:.1f}" y="{y + BAR_H - 3}">{escape(b.text)}</text>')
    out.append("</svg>")
    return "".join(out)


def stacked_bars(
    title: str,
    rows: Sequence[tuple[str, Sequence[Segment], str]],
    width: int = 720,
    value_w: int = 220,
) -> str:
    """One horizontal bar per row, made of segments (e.g. cost per backend); rows share a scale.
    Each row is (label, segments, text at the end). A legend of segment labels follows."""
    plot_w = width - LABEL_W - value_w
    total = max((sum(s.value for s in segs) for _, segs, _ in rows), default=0.0)
    legend = list(dict.fromkeys((s.label, s.color) for _, segs, _ in rows for s in segs))
    height = ROW_H * len(rows) + 20 + 18 * ((len(legend) + 3) // 4)
    out = [_open(width, height, title)]
    for i, (label, segs, text) in enumerate(rows):
        y = 5 + i * ROW_H
        x = float(LABEL_W)
        out.append(
            f'<text x="{LABEL_W - 8}" y="{y + BAR_H - 3}" text-anchor="end">{escape(label)}</text>'
        )
        for s in segs:
            w = 0.0 if total <= 0 else s.value / total * plot_w
            out.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{BAR_H}" fill="{s.color}">'
                f"<title>{escape(s.label)}</title></rect>"
            )
            x += w
        out.append(f'<text x="{x + 6:.1f}" y="{y + BAR_H - 3}">{escape(text)}</text>')
    y0 = 15 + ROW_H * len(rows)
    for j, (label, color) in enumerate(legend):
        lx, ly = LABEL_W + (j % 4) * LEGEND_W, y0 + 18 * (j // 4)
        out.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{lx + 14}" y="{ly}">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


@dataclass(slots=True, frozen=True)
class Series:
    label: str
    points: Sequence[tuple[float, float]]  # (x, y) in [0, 1]
    color: str
    dashed: bool = False
    markers: bool = False


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    marks: Sequence[tuple[float, float, str]] = (),  # (x, y, text): highlighted points
    y_range: tuple[float, float] = (0.0, 1.0),
    h_lines: Sequence[tuple[float, str]] = (),  # (y, text): horizontal guides
    fmt: Callable[[float], str] = lambda v: f"{100 * v:.0f}%",
    width: int = 640,
    height: int = 400,
) -> str:
    """Lines over a unit-square-ish plot: x in [0, 1], y in ``y_range``."""
    left, right, top, bottom = 60, 20, 20, 70
    pw, ph = width - left - right, height - top - bottom
    y0, y1 = y_range
    span = (y1 - y0) or 1.0

    def px(x: float, y: float) -> tuple[float, float]:
        return left + max(0.0, min(1.0, x)) * pw, top + (
            1.0 - max(0.0, min(1.0, (y - y0) / span))
        ) * ph

    out = [_open(width, height, title)]
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    for k in range(6):  # grid and ticks
        f = k / 5
        gx, _ = px(f, y0)
        _, gy = px(0.0, y0 + f * span)
        out.append(f'<line x1="{gx:.1f}" y1="{top}" x2="{gx:.1f}" y2="{top + ph}" stroke="#eee"/>')
        out.append(
            f'<line x1="{left}" y1="{gy:.1f}" x2="{left + pw}" y2="{gy:.1f}" stroke="#eee"/>'
        )
        out.append(
            f'<text x="{gx:.1f}" y="{top + ph + 16}" text-anchor="middle">{escape(fmt(f))}</text>'
        )
        out.append(
            f'<text x="{left - 6}" y="{gy + 4:.1f}" text-anchor="end">{escape(fmt(y0 + f * span))}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2}" y="{top + ph + 34}" text-anchor="middle">{escape(x_label)}</text>'
    )
    out.append(
        f'<text transform="translate(14,{top + ph / 2}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>'
    )
    for y, text in h_lines:
        _, gy = px(0.0, y)
        out.append(
            f'<line x1="{left}" y1="{gy:.1f}" x2="{left + pw}" y2="{gy:.1f}" stroke="#888" stroke-dasharray="2,3"/>'
        )
        out.append(
            f'<text x="{left + pw - 4}" y="{gy - 4:.1f}" text-anchor="end" fill="#666">{escape(text)}</text>'
        )
    for s in series:
        pts = " ".join("{:.1f},{:.1f}".format(*px(x, y)) for x, y in s.points)
        dash = ' stroke-dasharray="6,4"' if s.dashed else ""
        out.append(
            f'<polyline points="{pts}" fill="none" stroke="{s.color}" stroke-width="2"{dash}/>'
        )
        if s.markers:
            for x, y in s.points:
                cx, cy = px(x, y)
                out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2" fill="{s.color}"/>')
    for x, y, text in marks:
        cx, cy = px(x, y)
        out.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="none" stroke="#c00" stroke-width="2.5"/>'
        )
        out.append(
            f'<text x="{cx + 9:.1f}" y="{cy + 16:.1f}" fill="#c00" font-weight="bold">{escape(text)}</text>'
        )
    for j, s in enumerate(series):  # legend under the plot
        lx, ly = left + j * 190, top + ph + 56
        dash = ' stroke-dasharray="6,4"' if s.dashed else ""
        out.append(
            f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 22}" y2="{ly - 4}" stroke="{s.color}" stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{lx + 28}" y="{ly}">{escape(s.label)}</text>')
    out.append("</svg>")
    return "".join(out)
