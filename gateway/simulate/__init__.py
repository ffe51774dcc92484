"""The savings simulator: replay a request log through a policy offline and show the money.

    gateway simulate --policy policies/default.yaml --requests policies/sample-requests.jsonl --html report.html

``simulate(policy, log, env=...)`` returns a ``Report``; ``render_table`` and ``render_html``
turn it into text and a self-contained HTML page. Nothing here calls a backend.
"""

from gateway.simulate.aggregate import Group, Rate, Report
from gateway.simulate.curve import Curve, CurvePoint
from gateway.simulate.html import render_html
from gateway.simulate.log import Label, LogError, LoggedRequest, read_log
from gateway.simulate.run import simulate
from gateway.simulate.table import render_table

__all__ = [
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
]
