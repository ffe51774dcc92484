"""Run aiohttp mock upstreams on loopback in a background thread, and control their faults.

    with running(mock_openai.create_app(control)) as base_url: ...
    base_url, stop = run_server_in_thread(app); ...; stop()

``MockControl`` is shared between the test (its thread) and the server (its own loop); every
access goes through a lock. Faults are consumed one per request, in order.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["Fault", "MockControl", "RecordedRequest", "run_server_in_thread", "running"]

SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "x-goog-api-key"})


@dataclass(slots=True)
class Fault:
    """What the next request gets instead of (or on top of) a normal answer."""

    status: int | None = None  # answer this HTTP status with an error body
    retry_after: str | None = None  # Retry-After header value on that error
    body: bytes | None = None  # error body (default: the provider's error shape)
    delay_s: float = 0.0  # wait this long before answering
    drop: bool = False  # close the connection before the first byte
    stream_fail_after: int | None = None  # streaming: drop the connection after K events
    stream_stall_after: int | None = None  # streaming: send nothing more after K events


@dataclass(slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names, secrets removed
    body: Any  # parsed JSON (None if not JSON)
    raw: bytes
    auth_ok: bool  # the expected key was presented (True when none is expected)


@dataclass
class MockControl:
    """Shared state of one mock server: expected key, scripted faults, requests seen."""

    api_key: str | None = None  # when set, requests must present it (else 401)
    models: list[str] = field(default_factory=lambda: ["mock-model"])
    delay_s: float = 0.0  # every request waits this long (for timeout tests)
    record_requests: bool = True  # False for benchmarks: nothing kept per request
    tool_calls: bool = True  # False: answer in text even when the request offers tools (agents)
    _faults: deque[Fault] = field(default_factory=deque)
    _requests: list[RecordedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        retry_after: str | None = None,
        body: bytes | None = None,
    ) -> None:
        self._push(n, Fault(status=status, retry_after=retry_after, body=body))

    def drop_next(self, n: int = 1) -> None:
        self._push(n, Fault(drop=True))

    def delay_next(self, seconds: float, n: int = 1) -> None:
        self._push(n, Fault(delay_s=seconds))

    def break_stream_next(self, after_events: int, n: int = 1) -> None:
        self._push(n, Fault(stream_fail_after=after_events))

    def stall_stream_next(self, after_events: int, n: int = 1) -> None:
        """The stream goes silent after K events until the client hangs up (timeout tests)."""
        self._push(n, Fault(stream_stall_after=after_events))

    def _push(self, n: int, fault: Fault) -> None:
        with self._lock:
            self._faults.extend([fault] * n)

    def take_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def record(self, req: RecordedRequest) -> None:
        if not self.record_requests:
            return
        with self._lock:
            self._requests.append(req)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def bodies(self, path_suffix: str = "") -> list[Any]:
        return [r.body for r in self.requests if r.path.endswith(path_suffix)]

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self._requests.clear()
            self.delay_s = 0.0


def content_text(content: Any) -> str:
    """The text of an OpenAI message content or Anthropic content blocks (text parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def word_count(text: str) -> int:
    """The mocks' token count: words, at least one."""
    return max(1, len(text.split()))


def public_headers(headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower() not in SECRET_HEADERS}


async def drop_connection(request: web.Request) -> web.StreamResponse:
    """Close the TCP connection without answering (the client sees a disconnect)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise asyncio.CancelledError  # aiohttp stops handling this request quietly


async def stall_until_closed(request: web.Request, limit_s: float = 60.0) -> None:
    """Send nothing until the client closes the connection (or ``limit_s`` passes), then stop
    handling the request as ``drop_connection`` does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while loop.time() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            break
        await asyncio.sleep(0.02)
    await drop_connection(request)


def run_server_in_thread(app: web.Application) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` on 127.0.0.1 (a free port) in a daemon thread. Returns (base_url, stop)."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    ready = threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            box["port"] = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - aiohttp has no public getter
        except OSError as exc:
            box["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="mock-upstream", daemon=True)
    thread.start()
    if not ready.wait(10) or "error" in box:
        raise RuntimeError(f"mock server did not start: {box.get('error')}")

    def stop() -> None:
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    return f"http://127.0.0.1:{box['port']}", stop


@contextmanager
def running(app: web.Application) -> Iterator[str]:
    base_url, stop = run_server_in_thread(app)
    try:
        yield base_url
    finally:
        stop()
