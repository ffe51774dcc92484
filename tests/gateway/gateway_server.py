"""Run the real gateway (uvicorn + our ASGI app) on a loopback port in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from gateway.server.app import create_app
from gateway.server.connections import ConnectionLimits, protocol_class


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_gateway(
    policy_path: Path, env: Mapping[str, str], limits: ConnectionLimits | None = None
) -> Iterator[tuple[str, object]]:
    """Yields (base_url, app). The app object gives tests access to the live runtime. The
    connections are served by the gateway's own protocol, as `gateway serve` does."""
    app = create_app(policy_path, env)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="asyncio",
        lifespan="on",
        log_level="warning",
        http=protocol_class(limits or ConnectionLimits()),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)
