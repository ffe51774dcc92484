"""Holds the live ``Runtime`` and swaps it on reload (file change, SIGHUP, admin endpoint).

A bad file never replaces a good one: the old policy keeps serving, the reason is logged
and the failure counted. The watcher waits for a changed file to stay unchanged for one more
interval (a writer still at work is not read half-way), and refuses a change that loosens
auth or residency the way a cut file would (``gateway.config.loosening``): such a change is
applied only by an explicit reload (SIGHUP, POST /admin/reload). Writing the file elsewhere
and renaming it over the old one (what editors and ConfigMaps do) is atomic and never seen
half-written.

A new ``Runtime`` is built in a thread of its own that ends with the build (a learned scorer's
calibration can take seconds); requests keep being served by the old one meanwhile. Not
asyncio's thread pool: a pool thread that ran torch lives on with its own OpenMP team, and with
two teams on a small CPU GNU OpenMP stops spin-waiting (it manages more threads than CPUs), so
every later prompt encode on the event loop ran ~1.6x slower (bench/router_reload_threads.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from gateway.config.loader import load_policy
from gateway.config.loosening import loosenings
from gateway.config.schema import Policy
from gateway.runtime import Runtime

T = TypeVar("T")

log = logging.getLogger("gateway.policy")

WATCH_INTERVAL_S = 1.0
MAX_SETTLE_ROUNDS = 10  # a file that keeps changing is read after this many intervals anyway
RETIRE_GRACE_S = 30.0  # requests in flight on a retired backend get this long to finish


async def in_own_thread(fn: Callable[[], T], name: str) -> T:
    """``fn()`` on a new daemon thread that ends when it returns (see the module docstring)."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the awaiting coroutine
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await asyncio.wrap_future(future)


class PolicyStore:
    def __init__(
        self,
        path: str | Path,
        env: Mapping[str, str],
        metrics,
        before_build: Callable[[Policy], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.env = env
        self.metrics = metrics
        # e.g. RouterThreads.prepare: process settings a runtime's parts need before they load
        self._before_build = before_build
        self._stamp = self._file_stamp()  # before reading: a change during the read is seen
        self.runtime: Runtime = self._build(None)
        self._watch_task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()
        self._to_close: list = []  # retired backends not yet closed

    def _build(self, previous: Runtime | None) -> Runtime:
        loaded = load_policy(self.path, self.env)
        for w in loaded.warnings:
            log.warning("%s", w)
        if self._before_build is not None:
            self._before_build(loaded.policy)
        return Runtime(loaded, previous)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            # follows symlinks: a Kubernetes ConfigMap swap changes the target
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def reload(self, why: str, *, explicit: bool = True) -> tuple[bool, str]:
        """Load the file and swap the runtime in. ``explicit``: someone asked for it (SIGHUP,
        admin endpoint); the file watcher's reloads are not, and may not loosen auth or
        residency."""
        async with self._lock:
            self._stamp = self._file_stamp()
            old = self.runtime
            try:
                new = await in_own_thread(lambda: self._build(old), "policy-build")
            except (ValueError, OSError) as exc:  # PolicyError, and what building can raise
                self.metrics.record_policy_reload(False)
                log.error("policy reload (%s) failed; keeping the running policy: %s", why, exc)
                return False, str(exc)
            looser = loosenings(old.policy, new.policy)
            if looser and not explicit:
                self.metrics.record_policy_reload(False)
                log.error(
                    "policy reload (%s) refused: the file loosens auth or residency as a file "
                    "cut short would (%s); if this is intended, apply it with SIGHUP or "
                    "POST /admin/reload",
                    why,
                    "; ".join(looser),
                )
                retired = new.retired_backends(old)  # built for nothing: close them
                if retired:
                    self._close_soon(retired, grace_s=0.0)
                return False, "refused: " + "; ".join(looser)
            for change in looser:
                log.warning("policy reload (%s) loosens: %s", why, change)
            self.runtime = new
            self.metrics.record_policy_reload(True)
            log.info("policy reloaded (%s) from %s", why, self.path)
            retired = old.retired_backends(new)
            if retired:
                self._close_soon(retired, RETIRE_GRACE_S)
            return True, "reloaded"

    def _close_soon(self, backends: list, grace_s: float) -> None:
        self._to_close.extend(backends)
        t = asyncio.ensure_future(self._close_later(backends, grace_s))
        self._retiring.add(t)
        t.add_done_callback(self._retiring.discard)

    async def _close_later(self, backends, grace_s: float) -> None:
        await asyncio.sleep(grace_s)
        for b in backends:
            self._to_close.remove(b)
            await b.close()

    async def _settled(self, interval_s: float) -> bool:
        """After a change is seen: wait until the file stays the same for one interval."""
        seen = self._file_stamp()
        for _ in range(MAX_SETTLE_ROUNDS):
            await asyncio.sleep(interval_s)
            now = self._file_stamp()
            if now == seen:
                break
            seen = now
        return seen is not None and seen != self._stamp

    async def _watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                stamp = self._file_stamp()
                if stamp is not None and stamp != self._stamp and await self._settled(interval_s):
                    await self.reload("file changed", explicit=False)
            except Exception:  # noqa: BLE001 - the watcher outlives any one bad reload; logged
                log.exception("policy watcher: reload failed; still watching %s", self.path)

    def reload_soon(self, why: str) -> None:
        """Reload in a task of its own (a signal handler cannot await); failures are logged."""
        t = asyncio.ensure_future(self.reload(why))
        self._retiring.add(t)
        t.add_done_callback(self._reload_done)

    def _reload_done(self, t: asyncio.Task) -> None:
        self._retiring.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("policy reload failed", exc_info=t.exception())

    def start(self, interval_s: float = WATCH_INTERVAL_S) -> None:
        """Watch the file (mtime, size, inode: editors' atomic renames and ConfigMap swaps too)."""
        self._watch_task = asyncio.ensure_future(self._watch(interval_s))

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        for t in list(self._retiring):
            t.cancel()
        for b in self._to_close:
            await b.close()
        await self.runtime.close()
