"""The relay code of upstream streams alone: CPU per streamed answer, before/after in one run.

What the gateway does per streamed answer between the socket and the caller (prime, read
chunks, split and check events, note usage and model), for the three stream kinds, fed from
memory with the mock upstream's own answers (bench/mock_upstream.py), one event per read as
the mock writes them:

    chat       SSEStream (openai_compat): chat-completion chunks and usage, ended by [DONE]
    messages   NativeStream (native): Anthropic Messages events, passed through
    responses  NativeStream (native): OpenAI Responses events, passed through

No sockets, no server: a change to these classes shows here far above the noise that an
end-to-end run (bench/gateway_bench.py) has on a shared machine. Each measurement runs in a
process of its own (``--tree``'s gateway package); with ``--baseline TREE`` the two trees
alternate, the order swapped every round, and the report pairs them per round. Per kind and
tree: the fastest of ``--repeats`` batches of ``--answers`` answers in CPU time (the least
disturbed), after a check that one answer comes through byte for byte.

    python bench/stream_relay.py [--baseline /tmp/base] [--rounds 5] [--answers 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KINDS = {
    "chat": "chat_stream_usage",
    "messages": "messages_stream",
    "responses": "responses_stream",
}


def chunks_of(http_response: bytes) -> list[bytes]:
    """The chunks of a chunked HTTP/1.1 response, as the mock writes them."""
    body = http_response.split(b"\r\n\r\n", 1)[1]
    out = []
    while True:
        size_line, body = body.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return out
        out.append(body[:size])
        body = body[size + 2 :]


class _Content:
    __slots__ = ("_it",)

    def __init__(self, chunks: list[bytes]) -> None:
        self._it = iter(chunks)

    async def readany(self) -> bytes:
        return next(self._it, b"")


class _Response:
    """What the stream classes use of an aiohttp response."""

    __slots__ = ("content",)

    def __init__(self, chunks: list[bytes]) -> None:
        self.content = _Content(chunks)

    def close(self) -> None:
        pass

    def release(self) -> None:
        pass


def _opener(kind: str) -> Any:
    """A function that wraps a fake response in the kind's stream class (this tree's)."""
    from gateway.backends.native import NativeStream, endpoints_for
    from gateway.backends.openai_compat import OpenAICompatBackend, SSEStream
    from gateway.config.schema import parse_backend

    if kind == "chat":
        cfg = parse_backend(
            {"kind": "openai_compatible", "model": "mock-model", "base_url": "http://h/v1"}
        )
        backend = OpenAICompatBackend("local", cfg)
        return lambda resp: SSEStream(backend, resp)
    if kind == "messages":
        cfg = parse_backend({"kind": "litellm", "model": "anthropic/mock-model"})
        ep = endpoints_for("claude", cfg, None)["anthropic"]
    else:
        cfg = parse_backend(
            {
                "kind": "openai_compatible",
                "model": "mock-model",
                "base_url": "http://h/v1",
                "native_protocols": ["responses"],
            }
        )
        ep = endpoints_for("gpt", cfg, None)["responses"]
    return lambda resp: NativeStream(ep, resp, kind)


async def _batch(open_stream: Any, chunks: list[bytes], answers: int) -> float:
    """CPU seconds for ``answers`` streamed answers, relayed to the end."""
    t0 = time.process_time()  # CPU time: what other work on the machine takes is not counted
    for _ in range(answers):
        stream = open_stream(_Response(chunks))
        await stream.prime()
        async for _item in stream:
            pass
        await stream.aclose()
    return time.process_time() - t0


def worker(kind: str, answers: int, repeats: int) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from mock_upstream import build_answers

    chunks = chunks_of(build_answers()[KINDS[kind]])
    open_stream = _opener(kind)

    async def run() -> list[float]:
        stream = open_stream(_Response(chunks))  # first, that the answer goes through whole
        await stream.prime()
        relayed = [item async for item in stream]
        await stream.aclose()
        if b"".join(relayed) != b"".join(chunks):
            raise SystemExit(f"{kind}: the stream did not relay the answer as it came")
        await _batch(open_stream, chunks, max(answers // 10, 1))  # warm
        return [await _batch(open_stream, chunks, answers) for _ in range(repeats)]

    import gateway

    times = asyncio.run(run())
    return {
        "us_per_answer": min(times) / answers * 1e6,
        "events": len(chunks),
        "gateway": str(Path(gateway.__file__).parent),  # which tree's code ran
    }


def measure(tree: Path, kind: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", kind]
    cmd += ["--answers", str(args.answers), "--repeats", str(args.repeats)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{tree} {kind}: worker failed:\n{out.stderr[-2000:]}")
    got = json.loads(out.stdout)
    if Path(got["gateway"]) != tree.resolve() / "gateway":
        raise SystemExit(f"{tree}: the worker imported {got['gateway']}, not this tree's")
    return got


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", choices=sorted(KINDS), help=argparse.SUPPRESS)
    p.add_argument("--tree", type=Path, default=ROOT, help="the source tree measured")
    p.add_argument("--baseline", type=Path, help="another source tree, measured alternately")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--answers", type=int, default=2000, help="streamed answers per batch")
    p.add_argument("--repeats", type=int, default=5, help="batches per measurement (fastest kept)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    for name, hi in (("rounds", 50), ("answers", 1_000_000), ("repeats", 100)):
        if not 1 <= getattr(args, name) <= hi:
            p.error(f"--{name} must be in [1, {hi}]")
    if args.worker:
        print(json.dumps(worker(args.worker, args.answers, args.repeats)))
        return 0
    trees = {"tree": args.tree} | ({"baseline": args.baseline} if args.baseline else {})
    rows = []
    for rnd in range(args.rounds):
        for kind in KINDS:
            names = list(trees) if rnd % 2 == 0 else list(trees)[::-1]
            got = {n: measure(trees[n], kind, args) for n in names}
            row = {"round": rnd + 1, "kind": kind, "events": got["tree"]["events"]}
            row |= {f"{n}_us": round(g["us_per_answer"], 2) for n, g in got.items()}
            if args.baseline:
                row["x_baseline"] = round(row["tree_us"] / row["baseline_us"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        line = f"{kind}: {statistics.median(r['tree_us'] for r in mine):.2f} us/answer"
        if args.baseline:
            xs = sorted(r["x_baseline"] for r in mine)
            line += (
                f" vs baseline {statistics.median(r['baseline_us'] for r in mine):.2f}:"
                f" x{statistics.median(xs):.3f} (rounds {xs[0]:.3f}..{xs[-1]:.3f})"
            )
        print(line)
    if args.out:
        args.out.write_text(json.dumps({"argv": sys.argv[1:], "rounds": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
