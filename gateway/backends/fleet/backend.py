"""A self-hosted backend served by several replicas (``fleet:`` on an ``openai_compatible``
backend): one pass-through adapter per replica, a balancer, and two background loops that keep
the member list (DNS) and each replica's live load (its ``/metrics``) fresh.

A request goes to the balancer's choice; a replica that fails it with a retryable error (down,
reset, 5xx, 503 "queue full") is marked and the next choice takes the same request at once, so
a dead replica costs one failed connect, not a failed request. When every replica is past the
spill-over thresholds, a request the pipeline allows to leave (``UpstreamRequest.spill_ok``)
raises ``FleetSaturatedError`` and goes to the rule's next backend; any other request waits in
the least-loaded replica's queue or fails, as ``spill_over.when_saturated`` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gateway.backends.base import (
    Backend,
    UpstreamRequest,
    UpstreamResponse,
    UpstreamStream,
)
from gateway.backends.fleet.balancer import Choice, FleetBalancer, Replica, prefix_key
from gateway.backends.fleet.load import MetricsFormatError, parse_load
from gateway.backends.openai_compat import OpenAICompatBackend
from gateway.backends.resilience import counts_as_failure
from gateway.config.fleet import FleetConfig
from gateway.errors import (
    FleetSaturatedError,
    UpstreamConnectTimeoutError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)

log = logging.getLogger("gateway.backends.fleet")

__all__ = ["FleetBackend", "FleetCounters", "conversation_text"]

SCRAPE_TIMEOUT_S = 2.0
RETIRE_GRACE_S = 30.0
SPILL_OUTCOMES = ("spilled", "waited", "refused")


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_hosts(name: str, port: int) -> list[str]:
    """The addresses ``name`` resolves to now (A and AAAA), sorted."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and "text" in p)
    return ""


def conversation_text(body: dict[str, Any]) -> str:
    """The part of a request every later turn of its conversation starts with: the messages up
    to and including the first user message (system prompt, first question), or a text
    completion's prompt. It is what a replica's prefix cache holds for the conversation, and
    it does not change as turns are appended, so the affinity key stays put."""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = []
        for m in messages:
            if not isinstance(m, dict):
                continue
            parts.append(f"{m.get('role')}:{_text(m.get('content'))}\n")
            if m.get("role") == "user":
                break
        return "".join(parts)
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else ""


class FleetCounters:
    """What the fleet did, for the metrics collector (plain ints: the request path only adds)."""

    __slots__ = ("requests", "spill", "affinity")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}  # (replica, ok|error) -> n
        self.spill = dict.fromkeys(SPILL_OUTCOMES, 0)
        self.affinity = {"home": 0, "moved": 0}


class _FleetStream(UpstreamStream):
    """A replica's stream that gives the replica's in-flight slot back when it is closed."""

    def __init__(self, inner: UpstreamStream, release) -> None:
        self._inner, self._release = inner, release
        self.model = inner.model

    async def __aiter__(self) -> AsyncIterator[bytes]:
        inner = self._inner
        async for event in inner:
            self.last_json = inner.last_json
            yield event
        self.usage = inner.usage

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self.usage = self._inner.usage
            self._release()


class FleetBackend(Backend):
    kind = "openai_compatible"

    def __init__(
        self, name: str, cfg, fleet: FleetConfig, resolver: Resolver | None = None
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.fleet = fleet
        self.model = cfg.model
        self.self_hosted = cfg.self_hosted
        self.balancer = FleetBalancer(fleet)
        self.counters = FleetCounters()
        self._adapters: dict[str, OpenAICompatBackend] = {}
        self._static = list(fleet.endpoints)
        self._resolved: list[str] = []
        self._tasks: list[asyncio.Future] = []
        self._closing: set[asyncio.Task] = set()
        self._session: aiohttp.ClientSession | None = None
        self._resolver = resolver or resolve_hosts
        self._set_members(self._static)

    # ------------------------------------------------------------ members

    def _set_members(self, urls: list[str]) -> None:
        added, removed = self.balancer.set_members(urls)
        for url in added:
            self._adapters[url] = OpenAICompatBackend(
                self.name, self.cfg.model_copy(update={"base_url": url, "fleet": None})
            )
            log.info("fleet %s: replica %s joined", self.name, url)
        for url in removed:  # only the DNS loop removes, so a loop is running
            adapter = self._adapters.pop(url)
            log.info("fleet %s: replica %s left", self.name, url)
            t = asyncio.get_running_loop().create_task(self._close_later(adapter))
            self._closing.add(t)
            t.add_done_callback(self._closing.discard)

    async def _close_later(self, adapter: OpenAICompatBackend) -> None:
        await asyncio.sleep(RETIRE_GRACE_S)  # requests in flight on it finish first
        await adapter.close()

    async def _resolve(self) -> list[str]:
        d = self.fleet.dns
        assert d is not None  # only called when configured
        try:
            hosts = await self._resolver(d.name, d.port)
        except OSError as exc:
            log.warning("fleet %s: cannot resolve %s: %s", self.name, d.name, exc)
            return self._resolved  # keep the last answer rather than emptying the fleet
        return [f"{d.scheme}://{f'[{h}]' if ':' in h else h}:{d.port}{d.path}" for h in hosts]

    async def _dns_loop(self) -> None:
        d = self.fleet.dns
        assert d is not None
        while True:
            self._resolved = await self._resolve()
            self._set_members([*self._static, *self._resolved])
            await asyncio.sleep(d.refresh_s)

    # ------------------------------------------------------------ live load

    def _metrics_url(self, api_root: str) -> str:
        u = urlsplit(api_root)
        return f"{u.scheme}://{u.netloc}{self.fleet.metrics_path}"

    async def _scrape(self, replica: Replica) -> None:
        session = self._session
        assert session is not None
        try:
            async with session.get(self._metrics_url(replica.key)) as resp:
                if resp.status != 200:
                    raise MetricsFormatError(f"HTTP {resp.status}")
                text = await resp.text()
            load = parse_load(text, time.monotonic())
        except (TimeoutError, aiohttp.ClientError, OSError, MetricsFormatError) as exc:
            if replica.scrape_ok:
                log.warning("fleet %s: replica %s metrics: %s", self.name, replica.key, exc)
            self.balancer.observe(replica.key, None)
            return
        if not replica.scrape_ok:
            log.info("fleet %s: replica %s metrics back", self.name, replica.key)
        self.balancer.observe(replica.key, load)

    async def scrape_all(self) -> None:
        """One round of scrapes, all replicas at once."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        await asyncio.gather(*(self._scrape(r) for r in list(self.balancer.replicas.values())))

    async def _scrape_loop(self) -> None:
        while True:
            await self.scrape_all()
            await asyncio.sleep(self.fleet.metrics_interval_s)

    def start(self) -> None:
        """Start the background loops in the running event loop (idempotent)."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        if self.fleet.dns is not None:
            self._tasks.append(loop.create_task(self._dns_loop()))
        if self.fleet.metrics_path is not None:
            self._tasks.append(loop.create_task(self._scrape_loop()))
        if not self._tasks:
            self._tasks.append(loop.create_future())  # marks "started"

    # ------------------------------------------------------------ choosing

    def _key(self, request: UpstreamRequest) -> int | None:
        aff = self.fleet.prefix_affinity
        if not aff.enabled or self.fleet.balance != "least_load" or len(self._adapters) < 2:
            return None
        text = conversation_text(request.body)
        return prefix_key(text, aff.prefix_chars) if text else None

    def _choose(self, request: UpstreamRequest, key: int | None, tried: set[str]) -> Replica:
        while True:
            choice: Choice | None = self.balancer.choose(key, tried)
            if choice is None:
                raise UpstreamUnavailableError(
                    f"backend {self.name!r}: no replica can take the request"
                    + (f" ({len(tried)} failed)" if tried else "")
                )
            if choice.saturated:
                self._on_saturated(request)
            if choice.replica.breaker.allow():  # claims the half-open probe, if it is one
                if choice.affinity is not None:
                    self.counters.affinity[choice.affinity] += 1
                return choice.replica
            tried.add(choice.replica.key)

    def _on_saturated(self, request: UpstreamRequest) -> None:
        s = self.fleet.spill_over
        n = len(self.balancer.replicas)
        if request.spill_ok:
            self.counters.spill["spilled"] += 1
            raise FleetSaturatedError(
                f"backend {self.name!r}: all {n} replicas are past the spill-over thresholds"
            )
        if s.when_saturated == "fail":
            self.counters.spill["refused"] += 1
            raise FleetSaturatedError(
                f"backend {self.name!r}: all {n} replicas are past the spill-over thresholds "
                "and this request may not go elsewhere (spill_over.when_saturated: fail)",
                retry_after=self.fleet.metrics_interval_s,
            )
        self.counters.spill["waited"] += 1

    def _count(self, replica: Replica, ok: bool) -> None:
        key = (replica.key, "ok" if ok else "error")
        self.counters.requests[key] = self.counters.requests.get(key, 0) + 1

    async def _on_replicas(self, request: UpstreamRequest, call):
        """``call(adapter)`` on the chosen replica; on a retryable failure, the next one."""
        self.start()
        key = self._key(request)
        tried: set[str] = set()
        while True:
            replica = self._choose(request, key, tried)
            adapter = self._adapters[replica.key]
            replica.outstanding += 1
            try:
                result = await call(adapter)
            except UpstreamError as exc:
                replica.outstanding -= 1
                self._count(replica, False)
                if counts_as_failure(exc):
                    replica.breaker.record_failure()
                else:
                    replica.breaker.record_success()
                # a read timeout may have done the work: do not send it again elsewhere
                # (a connect timeout sent nothing)
                if not exc.retryable or (
                    isinstance(exc, UpstreamTimeoutError)
                    and not isinstance(exc, UpstreamConnectTimeoutError)
                ):
                    raise
                log.warning(
                    "fleet %s: replica %s failed (%s); trying another",
                    self.name,
                    replica.key,
                    exc.message,
                )
                tried.add(replica.key)
                continue
            except BaseException:  # cancelled (client gone, timeout): the slot is free again
                replica.outstanding -= 1
                raise
            replica.breaker.record_success()
            self._count(replica, True)
            return replica, result

    # ------------------------------------------------------------ the contract

    async def complete(self, request: UpstreamRequest) -> UpstreamResponse:
        replica, resp = await self._on_replicas(request, lambda a: a.complete(request))
        replica.outstanding -= 1
        return resp

    async def open_stream(self, request: UpstreamRequest) -> UpstreamStream:
        replica, stream = await self._on_replicas(request, lambda a: a.open_stream(request))
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                replica.outstanding -= 1

        return _FleetStream(stream, release)

    async def probe(self) -> bool:
        self.start()
        results = await asyncio.gather(*(a.probe() for a in list(self._adapters.values())))
        return any(results)

    async def close(self) -> None:
        for t in [*self._tasks, *self._closing]:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        for a in self._adapters.values():
            await a.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
