"""A loopback stand-in for one engine replica (ours or vLLM) with a queue and a prefix cache,
for fleet tests and ``bench/fleet_bench.py``. It costs no CPU: time is simulated with sleeps.

The model of an engine:
- ``slots`` requests run at once (the batch); more wait in a FIFO queue, so latency grows
  with the queue.
- A request's prompt is its conversation text (roles + contents). The replica keeps a prefix
  cache of ``block_chars``-character blocks (hash chain, LRU, ``cache_blocks`` of them): the
  leading blocks already cached are hits; only the rest is prefilled, at ``prefill_s_per_kchar``
  seconds per 1,000 characters. So a hit makes the request faster.
- Then ``decode_s_per_token`` per generated token (``max_tokens``, default 8).
- ``GET /metrics`` reports ``vllm:num_requests_running`` / ``waiting`` /
  ``kv_cache_usage_perc`` (cached blocks / capacity) and the prefix-cache counters
  ``local_engine_prefix_cache_queries_total`` / ``hits_total`` in blocks, as our engine names them.

``report(waiting=..., kv=...)`` overrides the reported gauges (spill-over tests); ``stop()`` and
``start()`` kill and restart the replica on the same port; ``requests`` counts what it served.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["EngineModel", "MockEngine"]


@dataclass(frozen=True, slots=True)
class EngineModel:
    slots: int = 4
    block_chars: int = 64
    cache_blocks: int = 512
    base_s: float = 0.002
    prefill_s_per_kchar: float = 0.02
    decode_s_per_token: float = 0.002


def conversation(body: dict[str, Any]) -> str:
    msgs = body.get("messages")
    if isinstance(msgs, list):
        return "".join(f"{m.get('role')}:{m.get('content')}\n" for m in msgs if isinstance(m, dict))
    return str(body.get("prompt", ""))


class MockEngine:
    def __init__(self, model: EngineModel = EngineModel(), name: str = "default") -> None:
        self.model, self.name = model, name
        self.port = 0
        self.requests = 0
        self.block_queries = 0
        self.block_hits = 0
        self._lock = threading.Lock()
        self._forced: dict[str, float] = {}
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._running = 0
        self._waiting = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._sem: asyncio.Semaphore | None = None

    @property
    def url(self) -> str:
        """The OpenAI API root, as a fleet endpoint."""
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------ control (test thread)

    def report(self, waiting: float | None = None, kv: float | None = None) -> None:
        with self._lock:
            self._forced = {k: v for k, v in (("waiting", waiting), ("kv", kv)) if v is not None}

    def start(self) -> MockEngine:
        """Serve on ``self.port`` (a free one the first time); returns self."""
        ready = threading.Event()
        box: dict[str, Any] = {}
        loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            self._sem = asyncio.Semaphore(self.model.slots)
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_post("/v1/completions", self._chat)
            app.router.add_get("/v1/models", self._models)
            app.router.add_get("/metrics", self._metrics)
            runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
            try:
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
                loop.run_until_complete(site.start())
                box["port"] = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
            except OSError as exc:
                box["error"] = exc
                ready.set()
                return
            self._runner = runner
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name=f"mock-engine-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(10) or "error" in box:
            raise RuntimeError(f"mock engine did not start: {box.get('error')}")
        self.port = box["port"]
        return self

    def stop(self) -> None:
        """Kill the replica: the port refuses connections until ``start()``."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = None
        with self._lock:
            self._running = self._waiting = 0

    def __enter__(self) -> MockEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ the engine

    def _prefix_hits(self, text: str) -> tuple[int, int]:
        """(cached leading chars, total chars); inserts the prompt's blocks."""
        m = self.model
        hits, chain, cached = 0, hashlib.blake2b(digest_size=16), True
        n_blocks = len(text) // m.block_chars
        with self._lock:
            for i in range(n_blocks):
                chain.update(text[i * m.block_chars : (i + 1) * m.block_chars].encode())
                h = chain.digest()
                if cached and h in self._cache:
                    hits += 1
                    self._cache.move_to_end(h)
                else:
                    cached = False
                    self._cache[h] = None
                    if len(self._cache) > m.cache_blocks:
                        self._cache.popitem(last=False)
            self.block_queries += n_blocks
            self.block_hits += hits
        return hits * m.block_chars, len(text)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            self.requests += 1
            self._waiting += 1
        assert self._sem is not None
        async with self._sem:
            with self._lock:
                self._waiting -= 1
                self._running += 1
            try:
                m = self.model
                cached, total = self._prefix_hits(conversation(body))
                tokens = int(body.get("max_tokens") or 8)
                await asyncio.sleep(
                    m.base_s
                    + (total - cached) / 1000 * m.prefill_s_per_kchar
                    + tokens * m.decode_s_per_token
                )
            finally:
                with self._lock:
                    self._running -= 1
        usage = {
            "prompt_tokens": total // 4,
            "completion_tokens": tokens,
            "total_tokens": total // 4 + tokens,
            "prompt_tokens_details": {"cached_tokens": cached // 4},
        }
        text = f"replica {self.port} answers"
        if body.get("stream"):
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            for event in (
                {"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
                {"choices": [], "usage": usage},
            ):
                chunk = {"id": "c", "object": "chat.completion.chunk", "model": self.name, **event}
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            return resp
        return web.json_response(
            {
                "id": "c",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "length",
                    }
                ],
                "usage": usage,
            }
        )

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.name}]})

    async def _metrics(self, request: web.Request) -> web.Response:
        with self._lock:
            waiting = self._forced.get("waiting", self._waiting)
            kv = self._forced.get("kv", len(self._cache) / self.model.cache_blocks)
            running, queries, hits = self._running, self.block_queries, self.block_hits
            served = self.requests
        label = f'{{model_name="{self.name}"}}'
        lines = [
            f"vllm:num_requests_running{label} {running}",
            f"vllm:num_requests_waiting{label} {waiting}",
            f"vllm:kv_cache_usage_perc{label} {kv}",
            f"local_engine_prefix_cache_queries_total{label} {queries}",
            f"local_engine_prefix_cache_hits_total{label} {hits}",
            f"mock_engine_requests_total{label} {served}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
