"""``gateway simulate``: replay a request log through a policy, offline, and show the money."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

from gateway.cli_args import add_policy_argument

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser(
        "simulate",
        help="replay a request log through a policy offline: shares, cost, savings, cost-quality curve",
        description="Replays a JSONL log of OpenAI request bodies through a policy without calling any backend.",
    )
    add_policy_argument(s)
    s.add_argument(
        "--requests",
        type=Path,
        required=True,
        help="JSONL log: one request body (or wrapper) per line",
    )
    s.add_argument(
        "--model",
        help="replay every request as if it asked for this virtual model (default: each request's own)",
    )
    s.add_argument("--threshold", type=float, help="override the models' 'hard' threshold (0..1)")
    s.add_argument(
        "--requests-per-day",
        type=float,
        help="traffic rate for monthly figures (default: from the log's timestamps)",
    )
    s.add_argument(
        "--html", type=Path, help="also write a self-contained HTML report with charts here"
    )
    s.add_argument("--json", type=Path, help="also write the report as JSON here")
    s.add_argument(
        "--env-all-backends",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="treat every configured backend as enabled even if its key variable is unset here (default: on)",
    )
    s.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: large logs on a terminal)",
    )
    s.set_defaults(func=_simulate)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _simulate(args: argparse.Namespace) -> int:
    from gateway.errors import PolicyError
    from gateway.simulate.export import report_dict
    from gateway.simulate.html import render_html
    from gateway.simulate.run import simulate
    from gateway.simulate.table import render_table

    if args.requests_per_day is not None and not args.requests_per_day > 0:
        print("error: --requests-per-day must be > 0", file=sys.stderr)
        return 2
    try:
        rep = simulate(
            Path(args.policy),
            args.requests,
            env=os.environ,
            model=args.model,
            threshold=args.threshold,
            requests_per_day=args.requests_per_day,
            all_backends=args.env_all_backends,
            progress=args.progress,
        )
    except (PolicyError, ValueError) as exc:  # LogError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render_table(rep))
    try:
        if args.html:
            _write(args.html, render_html(rep).encode())
            print(f"HTML report: {args.html}")
        if args.json:
            _write(
                args.json,
                orjson.dumps(
                    report_dict(rep), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
                ),
            )
            print(f"JSON report: {args.json}")
    except OSError as exc:
        print(f"error: cannot write the report: {exc}", file=sys.stderr)
        return 1
    return 0
