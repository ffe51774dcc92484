"""The rendered reports: a self-contained HTML page with its SVG charts, the terminal table, JSON."""

from __future__ import annotations

import json
import re
from xml.etree import ElementTree

from gateway.simulate import render_html, render_table, simulate
from gateway.simulate.export import report_dict
from tests.simulate.sim_helpers import EASY, HARD, IMAGE, chat


def _report(policy_file, log_file, labelled=True):
    label = {"label": {"strong_needed": 1}} if labelled else {}
    lines = [
        {"request": chat(HARD), "timestamp": 1746057600, **label},
        {"request": chat(EASY), "timestamp": 1746061200, **label},
        {"request": chat(IMAGE), "timestamp": 1746064800},
        {
            "request": chat("<script>alert(1)</script>"),
            "headers": {"x-data-classification": "confidential"},
        },
    ]
    return simulate(policy_file(), log_file(lines, "log<&>.jsonl"), env={})


def test_html_is_self_contained_with_charts(policy_file, log_file):
    page = render_html(_report(policy_file, log_file))
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page  # the prompt text never reaches the page, and we ship no JS
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    assert re.findall(r"https?://[^\s\"'<>]+", page) == ["http://www.w3.org/2000/svg"] * page.count(
        "<svg"
    )
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 5  # requests per backend, tokens per backend, per rule, cost, curve
    for svg in svgs:
        ElementTree.fromstring(svg)  # well-formed XML
    curve = svgs[-1]
    assert "<polyline" in curve and "policy:" in curve  # the sweep and the marked operating point
    assert "log&lt;&amp;&gt;.jsonl" in page  # names are escaped


def test_html_without_labels_says_so(policy_file, log_file):
    page = render_html(_report(policy_file, log_file, labelled=False))
    assert "No labels in the log" in page
    assert page.count("<svg") == 4


def test_table_and_json(policy_file, log_file):
    rep = _report(policy_file, log_file)
    text = render_table(rep)
    for want in (
        "Per backend",
        "Per rule",
        "local (self-hosted)",
        "openai (proprietary)",
        "all on gpt-4o (baseline)",
        "Cost-quality curve",
        "policy <-",
    ):
        assert want in text
    data = json.loads(json.dumps(report_dict(rep)))
    assert data["routed"] == rep.routed == 4
    assert data["savings_usd"] == rep.savings_usd
    assert sum(g["requests"] for g in data["by_backend"]) == 4
    assert data["per_month"]["savings_usd"] == rep.per_month(rep.savings_usd)
    assert len(data["curve"]["points"]) == 101


def test_progress_bar_when_asked(policy_file, log_file, capsys):
    simulate(policy_file(), log_file([{"request": chat(EASY)}] * 3), env={}, progress=True)
    err = capsys.readouterr().err
    assert "scoring" in err and "routing" in err
    simulate(policy_file(), log_file([{"request": chat(EASY)}] * 3), env={})  # small log: no bar
    assert "routing" not in capsys.readouterr().err


def test_public_surface():
    import gateway.simulate as sim

    assert set(sim.__all__) == {
        "Curve",
        "CurvePoint",
        "Group",
        "Label",
        "LogError",
        "LoggedRequest",
        "Rate",
        "Report",
        "read_log",
        "render_html",
        "render_table",
        "simulate",
    }
    assert all(hasattr(sim, n) for n in sim.__all__)


def _curve(qualities):
    from gateway.simulate.curve import Curve, CurvePoint

    n = len(qualities)
    # points by threshold ascending: most escalation (cost 1) first, least (cost 0.1) last
    pts = tuple(
        CurvePoint(i / (n - 1), 1 - i / (n - 1), 0.0, 1 - 0.9 * i / (n - 1), q, q)
        for i, q in enumerate(qualities)
    )
    return Curve(100, pts, pts[n // 2], 0.5, 0.9, None)


def test_a_curve_below_random_is_explained_on_the_page():
    from gateway.simulate.html import _curve as render_curve

    below = _curve([1.0, 0.7, 0.6, 0.55, 0.5])  # under the straight line from 0.5 to 1.0
    above = _curve([1.0, 0.95, 0.85, 0.7, 0.5])
    assert below.gain_over_random() < 0 < above.gain_over_random()
    assert "below the random-routing line" in render_curve(below)
    assert "below the random-routing line" not in render_curve(above)
