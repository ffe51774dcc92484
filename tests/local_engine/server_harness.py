"""A real uvicorn server on a loopback port, in a background thread, for the server tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from local_engine.config import EngineConfig
from local_engine.server import create_app
from local_engine.server.connections import uvicorn_config
from local_engine.server.limits import ServerLimits

STARTUP_TIMEOUT_S = 120


def tiny_server_config(
    model_dir: object, max_model_len: int, served_model_name: str
) -> EngineConfig:
    """The small CPU engine the server-level tests (hardening, fuzz) serve a tiny checkpoint with."""
    return EngineConfig(
        model=str(model_dir),
        device="cpu",
        dtype="float32",
        num_kv_blocks=64,
        block_size=16,
        max_num_seqs=8,
        max_num_batched_tokens=256,
        max_model_len=max_model_len,
        served_model_name=served_model_name,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(
    app: FastAPI, limits: ServerLimits | None = None, **uvicorn_kw: Any
) -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT``) of uvicorn serving ``app``, set up as
    ``local-engine serve`` sets it up (connection limits included)."""
    port = free_port()
    config = uvicorn_config(
        app,
        "127.0.0.1",
        port,
        limits or ServerLimits(),
        log_level="warning",
        lifespan="on",
        **uvicorn_kw,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("server failed to start (see log above)")
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start in time")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@contextmanager
def running_server(config: EngineConfig, limits: ServerLimits | None = None) -> Iterator[str]:
    """Yield the base URL of a server for ``config``."""
    with running_app(create_app(config, limits=limits), limits) as url:
        yield url
