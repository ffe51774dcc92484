"""The floor for a Python gateway: a bare FastAPI pass-through with one pooled aiohttp session.

No auth, routing, metrics or validation: it forwards the body to the upstream and returns the
upstream's bytes. bench/gateway_bench.py runs it beside the gateway so a reader sees how much
of the gateway's cost is the Python HTTP stack itself (uvicorn + aiohttp) on this machine.

    python bench/passthrough_floor.py --port 9200 --upstream http://127.0.0.1:9100/v1
"""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from fastapi import FastAPI, Request, Response

__all__ = ["build_app"]


def build_app(upstream: str) -> FastAPI:
    url = upstream.rstrip("/") + "/chat/completions"
    state: dict[str, aiohttp.ClientSession] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        yield
        await state["session"].close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.body()
        async with state["session"].post(
            url, data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            data = await resp.read()
            return Response(data, status_code=resp.status, media_type="application/json")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--upstream",
        required=True,
        help="OpenAI-compatible base URL, e.g. http://127.0.0.1:9100/v1",
    )
    args = p.parse_args(argv)
    uvicorn.run(
        build_app(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
