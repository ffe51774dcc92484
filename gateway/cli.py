"""``gateway`` command line: serve, check, router, simulate."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4000


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.config.loader import load_policy
    from gateway.errors import PolicyError

    try:  # fail fast, before binding a port, on a policy that cannot load
        load_policy(args.policy, os.environ)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 2
    # absolute(), not resolve(): a Kubernetes ConfigMap file is a symlink whose target folder is
    # replaced on update; watching the link path is what sees the change.
    os.environ["GATEWAY_POLICY"] = str(Path(args.policy).absolute())
    os.environ["GATEWAY_WATCH_INTERVAL"] = str(args.watch_interval)
    if args.workers > 1:
        from gateway.metrics import prepare_multiprocess

        prepare_multiprocess(args.metrics_dir or tempfile.mkdtemp(prefix="gateway-metrics-"))
    uvicorn.run(
        "gateway.server.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_keep_alive=75,
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    from gateway.config.explain import explain
    from gateway.config.loader import load_policy
    from gateway.errors import PolicyError

    try:
        loaded = load_policy(args.policy, os.environ)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(explain(loaded))
    return 0


def _schema(args: argparse.Namespace) -> int:
    from gateway.config.schema import policy_json_schema

    text = policy_json_schema()
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description="OpenAI-compatible routing gateway")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument(
        "--policy", default="policies/default.yaml", help="policy YAML (default: %(default)s)"
    )
    s.add_argument("--host", default=os.environ.get("GATEWAY_HOST", DEFAULT_HOST))
    s.add_argument("--port", type=int, default=int(os.environ.get("GATEWAY_PORT", DEFAULT_PORT)))
    s.add_argument(
        "--workers", type=int, default=1, help="worker processes (metrics stay correct across them)"
    )
    s.add_argument(
        "--metrics-dir", help="directory for multi-process metrics (default: a temp dir)"
    )
    s.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    s.add_argument(
        "--access-log",
        action="store_true",
        help="log every request line (off by default: it costs throughput)",
    )
    s.add_argument(
        "--watch-interval",
        type=float,
        default=1.0,
        help="seconds between checks of the policy file for changes; 0 turns watching off (SIGHUP and /admin/reload still work)",
    )
    s.set_defaults(func=_serve)

    c = sub.add_parser("check", help="validate a policy and print what it would do")
    c.add_argument("policy")
    c.set_defaults(func=_check)

    j = sub.add_parser("schema", help="print the policy file's JSON Schema (for editor completion)")
    j.add_argument("--out", help="write to this file instead of stdout")
    j.set_defaults(func=_schema)

    from gateway.ledger import cli as ledger_cli
    from gateway.router import cli as router_cli
    from gateway.shadow import cli as shadow_cli
    from gateway.simulate import cli as simulate_cli

    router_cli.register(sub)
    shadow_cli.register(sub)
    simulate_cli.register(sub)
    ledger_cli.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
