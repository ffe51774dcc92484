"""``gateway`` command line: serve, check, router, simulate."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path

from gateway.cli_args import PolicyArgParser, add_policy_argument

DEFAULT_HOST = "127.0.0.1"
# also set up by each worker process `serve --workers N` spawns (gateway.server.app.app_from_env)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEFAULT_PORT = 4000


def _listen(host: str, port: int) -> socket.socket:
    """Bind the port before anything else starts, so a busy port fails first and clearly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"gateway: cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _serve(args: argparse.Namespace) -> int:
    if args.local_engine is None:
        return _serve_gateway(args)
    return _serve_with_local_engine(args)


def _serve_with_local_engine(args: argparse.Namespace) -> int:
    """Start a supervised `local-engine serve` first, point LOCAL_ENGINE_URL at it, then serve;
    the engine stops with the gateway (engine_supervisor.py)."""
    import shlex

    from gateway.config.loader import load_policy
    from gateway.engine_supervisor import (
        EngineStartError,
        EngineSupervisor,
        SupervisorConfig,
        free_loopback_port,
    )
    from gateway.errors import PolicyError

    config = SupervisorConfig(
        model=args.local_engine,
        port=args.local_engine_port or free_loopback_port(),
        extra_args=tuple(shlex.split(args.local_engine_args)),
    )
    os.environ["LOCAL_ENGINE_URL"] = config.base_url  # what the shipped policies read
    try:  # a policy that cannot load fails before the model is loaded
        load_policy(args.policy, os.environ)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 2
    supervisor = EngineSupervisor(config)
    # uvicorn re-raises SIGTERM after its graceful shutdown; with the default handler the process
    # would die there and skip stopping the engine (PR_SET_PDEATHSIG would still end it, unlogged)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        try:
            supervisor.start()
        except EngineStartError as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            return 2
        return _serve_gateway(args)
    finally:
        supervisor.stop()


def _serve_gateway(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.config.loader import load_policy
    from gateway.errors import PolicyError
    from gateway.router import threads as router_threads
    from gateway.server.connections import ConnectionLimits

    try:  # fail fast, before binding a port, on a policy that cannot load
        load_policy(args.policy, os.environ)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 2
    sock = _listen(args.host, args.port)
    # absolute(), not resolve(): a Kubernetes ConfigMap file is a symlink whose target folder is
    # replaced on update; watching the link path is what sees the change.
    os.environ["GATEWAY_POLICY"] = str(Path(args.policy).absolute())
    os.environ["GATEWAY_WATCH_INTERVAL"] = str(args.watch_interval)
    os.environ["GATEWAY_LISTEN"] = f"http://{args.host}:{args.port}"  # for the "ready" line
    # each worker sets torch's threads from these when its policy uses the learned router
    os.environ[router_threads.ENV] = str(args.router_threads)
    os.environ[router_threads.WORKERS_ENV] = str(args.workers)
    # read by each worker's connection protocol (gateway/server/connections.py)
    os.environ.update(ConnectionLimits(args.header_timeout, args.max_connections).to_env())
    if args.workers > 1:
        from gateway.metrics import prepare_multiprocess

        prepare_multiprocess(args.metrics_dir or tempfile.mkdtemp(prefix="gateway-metrics-"))
    config = uvicorn.Config(
        "gateway.server.app:app_from_env",
        factory=True,
        workers=args.workers,
        loop="uvloop",
        http="gateway.server.connections:GatewayHttpProtocol",
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_keep_alive=args.keep_alive_timeout,
        timeout_graceful_shutdown=args.graceful_shutdown_timeout,
    )
    return _run(config, sock)


def _run(config, sock: socket.socket) -> int:
    """uvicorn on the socket ``_listen`` bound: one process, or a supervisor of workers."""
    import uvicorn

    if config.workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[sock]).run()
        return 0
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0 if server.started else 1


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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llm-routing-gateway")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown (not installed)"


def _router_threads(value: str) -> int:
    from gateway.router.threads import parse_threads

    try:
        return parse_threads(value)
    except ValueError as exc:  # argparse prefixes the flag's name
        raise argparse.ArgumentTypeError(f"{exc} (the flag, or GATEWAY_ROUTER_THREADS)") from None


def build_parser() -> argparse.ArgumentParser:
    from gateway.router import threads as router_threads

    p = PolicyArgParser(prog="gateway", description="OpenAI-compatible routing gateway")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gateway")
    add_policy_argument(s)
    s.add_argument(
        "--host",
        default=os.environ.get("GATEWAY_HOST", DEFAULT_HOST),
        help="address to listen on; 0.0.0.0 for every interface (default: %(default)s, env GATEWAY_HOST)",
    )
    s.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("GATEWAY_PORT", DEFAULT_PORT)),
        help="port to listen on (default: %(default)s, env GATEWAY_PORT)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes; metrics stay correct across them (default: %(default)s)",
    )
    s.add_argument(
        "--router-threads",
        type=_router_threads,
        default=os.environ.get(router_threads.ENV, str(router_threads.DEFAULT_THREADS)),
        metavar="N",
        help="torch intra-op threads of the learned difficulty router in each worker process "
        "(default: %(default)s, env GATEWAY_ROUTER_THREADS; more only pays for a contextual "
        "encoder on idle CPUs: bench/results/router_threads.md)",
    )
    s.add_argument(
        "--metrics-dir",
        help="directory for multi-process metrics (unset: a temp dir)",
    )
    s.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (default: %(default)s)",
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
        help="seconds between checks of the policy file for changes; 0 turns watching off, SIGHUP and /admin/reload still work (default: %(default)s)",
    )
    from gateway.server import connections as conn

    g = s.add_argument_group("connections (per worker process)")
    g.add_argument(
        "--header-timeout",
        type=float,
        default=conn.DEFAULT_HEADER_TIMEOUT_S,
        help="seconds a connection gets to send a request's headers, else 408 and close "
        "(also a new connection that sends nothing) (default: %(default)s)",
    )
    g.add_argument(
        "--max-connections",
        type=int,
        default=0,
        help="open connections past which a new one gets 503 and is closed "
        "(default 0: half the descriptor limit, at most 8192)",
    )
    g.add_argument(
        "--keep-alive-timeout",
        type=int,
        default=conn.DEFAULT_KEEP_ALIVE_S,
        help="seconds an idle kept-alive connection stays open (default: %(default)s)",
    )
    g.add_argument(
        "--graceful-shutdown-timeout",
        type=int,
        default=conn.DEFAULT_GRACEFUL_SHUTDOWN_S,
        help="seconds in-flight requests get on SIGTERM before they are cancelled "
        "(default: %(default)s)",
    )
    s.add_argument(
        "--local-engine",
        metavar="MODEL",
        help="also start `local-engine serve --model MODEL` (demo, a GGUF file or a checkpoint "
        "directory) on a loopback port, supervised: health-checked, restarted if it dies, stopped "
        "with the gateway; LOCAL_ENGINE_URL is set to it",
    )
    s.add_argument(
        "--local-engine-port",
        type=int,
        default=0,
        help="loopback port for --local-engine (default: a free one)",
    )
    s.add_argument(
        "--local-engine-args",
        default="",
        metavar="ARGS",
        help="more `local-engine serve` flags for --local-engine, as one string (e.g. '--dtype bfloat16')",
    )
    s.set_defaults(func=_serve)

    c = sub.add_parser("check", help="validate a policy and print what it would do")
    add_policy_argument(c, default=None)
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
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
