"""The aiohttp timeouts of one backend's upstream calls, built once from its config.

    whole answer   total=limit               connect=connect_timeout_s
    stream         sock_read=limit (no total: streams may run long; the limit is on the wait
                   between two chunks)       connect=connect_timeout_s

``limit`` is the request's own ``timeout_s`` where it has one, else the backend's. The
backend's two are built at startup; only a request with its own limit gets objects of its own.
"""

from __future__ import annotations

import aiohttp

from gateway.config.schema import BackendConfig

__all__ = ["UpstreamTimeouts"]


class UpstreamTimeouts:
    __slots__ = ("_connect", "_stream", "_whole")

    def __init__(self, cfg: BackendConfig) -> None:
        self._connect = cfg.connect_timeout_s
        self._whole = self._build(cfg.timeout_s, stream=False)
        self._stream = self._build(cfg.timeout_s, stream=True)

    def _build(self, limit: float, stream: bool) -> aiohttp.ClientTimeout:
        if stream:
            return aiohttp.ClientTimeout(total=None, connect=self._connect, sock_read=limit)
        return aiohttp.ClientTimeout(total=limit, connect=self._connect)

    def get(self, timeout_s: float | None, stream: bool) -> aiohttp.ClientTimeout:
        """The timeout of one call; ``timeout_s``: the request's own limit (None or 0: the
        backend's)."""
        if not timeout_s:
            return self._stream if stream else self._whole
        return self._build(timeout_s, stream)
