"""App factory: a FastAPI app whose lifespan starts and stops the AsyncLLMEngine on ``app.state``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from local_engine.config import EngineConfig
from local_engine.server.errors import install_error_handlers
from local_engine.server.generation import ServerContext
from local_engine.server.limits import ServerLimits
from local_engine.server.metrics import ServerMetrics
from local_engine.server.routes import router

__all__ = ["create_app"]


def _build_engine(config: EngineConfig) -> Any:
    from local_engine.engine.async_engine import AsyncLLMEngine  # torch import only when serving

    return AsyncLLMEngine.from_config(config)


def create_app(
    config: EngineConfig | None = None,
    *,
    engine: Any = None,
    limits: ServerLimits | None = None,
) -> FastAPI:
    """Serve ``engine`` if given (tests share one), else build one from ``config`` at startup."""
    if (config is None) == (engine is None):
        raise ValueError("pass exactly one of config or engine")
    server_limits = limits or ServerLimits()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        eng = engine if config is None else _build_engine(config)
        await eng.start()
        pool = ThreadPoolExecutor(server_limits.tokenizer_threads, "local-engine-cpu")
        app.state.ctx = ServerContext(
            engine=eng,
            tokenizer=eng.tokenizer,
            model_name=eng.model_name,
            max_model_len=eng.max_model_len,
            metrics=ServerMetrics(eng.model_name, eng.stats),
            limits=server_limits,
            cpu_pool=pool,
        )
        try:
            yield
        finally:
            await eng.shutdown()
            pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="local-engine", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.include_router(router)
    return app
