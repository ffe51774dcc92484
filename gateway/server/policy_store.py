"""Holds the live ``Runtime`` and swaps it on reload (file change, SIGHUP, admin endpoint).

A bad file never replaces a good one: the old policy keeps serving, the reason is logged
and the failure counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from gateway.config.loader import load_policy
from gateway.errors import PolicyError
from gateway.runtime import Runtime

log = logging.getLogger("gateway.policy")

WATCH_INTERVAL_S = 1.0
RETIRE_GRACE_S = 30.0  # requests in flight on a retired backend get this long to finish


class PolicyStore:
    def __init__(self, path: str | Path, env: Mapping[str, str], metrics) -> None:
        self.path = Path(path)
        self.env = env
        self.metrics = metrics
        self.runtime: Runtime = self._build(None)
        self._stamp = self._file_stamp()
        self._watch_task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()
        self._to_close: list = []  # retired backends not yet closed

    def _build(self, previous: Runtime | None) -> Runtime:
        loaded = load_policy(self.path, self.env)
        for w in loaded.warnings:
            log.warning("%s", w)
        return Runtime(loaded, previous)

    def _file_stamp(self) -> tuple[float, int, int] | None:
        try:
            st = os.stat(
                self.path
            )  # follows symlinks: a Kubernetes ConfigMap swap changes the target
        except OSError:
            return None
        return (st.st_mtime, st.st_size, st.st_ino)

    async def reload(self, why: str) -> tuple[bool, str]:
        async with self._lock:
            self._stamp = self._file_stamp()
            old = self.runtime
            try:
                new = self._build(old)
            except PolicyError as exc:
                self.metrics.record_policy_reload(False)
                log.error("policy reload (%s) failed; keeping the running policy: %s", why, exc)
                return False, str(exc)
            self.runtime = new
            self.metrics.record_policy_reload(True)
            log.info("policy reloaded (%s) from %s", why, self.path)
            retired = old.retired_backends(new)
            if retired:
                self._to_close.extend(retired)
                t = asyncio.ensure_future(self._close_later(retired))
                self._retiring.add(t)
                t.add_done_callback(self._retiring.discard)
            return True, "reloaded"

    async def _close_later(self, backends) -> None:
        await asyncio.sleep(RETIRE_GRACE_S)
        for b in backends:
            self._to_close.remove(b)
            await b.close()

    async def _watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            stamp = self._file_stamp()
            if stamp is not None and stamp != self._stamp:
                await self.reload("file changed")

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
