"""``local-engine`` command line: ``serve`` an OpenAI-compatible server, ``make-demo-model``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from local_engine.config import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_CPU_KV_CACHE_BYTES,
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_MAX_NUM_BATCHED_TOKENS,
    DEFAULT_MAX_NUM_SEQS,
    DEFAULT_MAX_WAITING,
    EngineConfig,
)
from local_engine.server.limits import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_GRACEFUL_SHUTDOWN_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_KEEP_ALIVE_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    ServerLimits,
)

__all__ = ["build_parser", "engine_config_from_args", "main", "server_limits_from_args"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
RANDOM_WEIGHTS_NOTE = (
    "RANDOM WEIGHTS: a tiny demo checkpoint made by `local-engine make-demo-model`. It exercises "
    "the engine and the server end to end; its output is meaningless text."
)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a local checkpoint over the OpenAI API")
    p.add_argument(
        "--model", required=True, help="local checkpoint directory (or a hub id when online)"
    )
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument(
        "--served-model-name", default=None, help="model name clients use (default: dir name)"
    )
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE)
    p.add_argument("--num-kv-blocks", type=int, default=None, help="default: sized from memory")
    p.add_argument("--cpu-kv-cache-bytes", type=int, default=DEFAULT_CPU_KV_CACHE_BYTES)
    p.add_argument("--gpu-memory-utilization", type=float, default=DEFAULT_GPU_MEMORY_UTILIZATION)
    p.add_argument("--max-num-seqs", type=int, default=DEFAULT_MAX_NUM_SEQS)
    p.add_argument("--max-num-batched-tokens", type=int, default=DEFAULT_MAX_NUM_BATCHED_TOKENS)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument(
        "--max-waiting",
        type=int,
        default=DEFAULT_MAX_WAITING,
        help="waiting-queue bound; past it requests get 503 + Retry-After",
    )
    p.add_argument("--no-prefix-caching", action="store_true")
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs / torch.compile")
    p.add_argument(
        "--no-cpu-malloc-tuning",
        action="store_true",
        help="CPU: let glibc return freed tensor memory to the kernel (slower; see host_memory.py)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    _add_limits(p)


def _add_limits(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection limits (see local_engine/server/limits.py)")
    g.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    g.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT_S, help="seconds")
    g.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT_S, help="seconds")
    g.add_argument("--keep-alive-timeout", type=int, default=DEFAULT_KEEP_ALIVE_S, help="seconds")
    g.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS)
    g.add_argument(
        "--graceful-shutdown-timeout",
        type=int,
        default=DEFAULT_GRACEFUL_SHUTDOWN_S,
        help="seconds in-flight requests get on SIGTERM",
    )


def _add_make_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-demo-model", help="write a tiny RANDOM-weight checkpoint + tokenizer")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--arch", default="qwen2", help="qwen2, qwen3, llama, mistral")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="local-engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_make_demo(sub)
    return parser


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        model=args.model,
        dtype=args.dtype,
        device=args.device,
        block_size=args.block_size,
        num_kv_blocks=args.num_kv_blocks,
        cpu_kv_cache_bytes=args.cpu_kv_cache_bytes,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=args.max_model_len,
        max_waiting=args.max_waiting,
        enable_prefix_caching=not args.no_prefix_caching,
        enforce_eager=args.enforce_eager,
        cpu_malloc_tuning=not args.no_cpu_malloc_tuning,
        served_model_name=args.served_model_name,
        seed=args.seed,
    )


def server_limits_from_args(args: argparse.Namespace) -> ServerLimits:
    return ServerLimits(
        max_body_bytes=args.max_body_bytes,
        body_timeout_s=args.body_timeout,
        header_timeout_s=args.header_timeout,
        keep_alive_s=args.keep_alive_timeout,
        max_connections=args.max_connections,
        graceful_shutdown_s=args.graceful_shutdown_timeout,
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from local_engine.server import create_app
    from local_engine.server.connections import uvicorn_config

    limits = server_limits_from_args(args)
    app = create_app(engine_config_from_args(args), limits=limits)
    config = uvicorn_config(app, args.host, args.port, limits, log_level=args.log_level)
    uvicorn.Server(config).run()
    return 0


def make_demo_model(out_dir: Path, arch: str = "qwen2") -> Path:
    """Build the tiny random checkpoint and label it as random in README.txt and config.json."""
    from local_engine.demo_model import build_tiny_checkpoint

    path = Path(build_tiny_checkpoint(out_dir, arch=arch))
    (path / "README.txt").write_text(RANDOM_WEIGHTS_NOTE + "\n", encoding="utf-8")
    config_file = path / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["local_engine_note"] = RANDOM_WEIGHTS_NOTE
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        path = make_demo_model(args.out_dir, args.arch)
        print(f"wrote a tiny random-weight {args.arch} checkpoint to {path}")
        return 0
    except (ValueError, FileNotFoundError) as exc:  # pydantic's ValidationError is a ValueError
        print(f"local-engine: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
