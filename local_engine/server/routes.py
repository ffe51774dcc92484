"""HTTP routes: thin handlers that hand over to chat.py / completions.py."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from local_engine.errors import EngineUnavailableError, ModelNotFoundError
from local_engine.server.body import read_body
from local_engine.server.chat import create_chat_completion
from local_engine.server.completions import create_completion
from local_engine.server.encoding import JSONResponse
from local_engine.server.generation import ServerContext
from local_engine.server.metrics import CONTENT_TYPE
from local_engine.server.protocol import ChatCompletionRequest, CompletionRequest

__all__ = ["router"]

router = APIRouter()


def get_context(request: Request) -> ServerContext:
    return request.app.state.ctx


Context = Annotated[ServerContext, Depends(get_context)]


# A gateway policy written before the model was chosen can name the self-hosted model "default"
# (policies/default.yaml does, unless LOCAL_ENGINE_MODEL is set); a one-model server accepts it.
DEFAULT_ALIAS = "default"


def _check_model(ctx: ServerContext, model: str) -> None:
    if model != ctx.model_name and model != DEFAULT_ALIAS:
        raise ModelNotFoundError(
            f"the model {model[:100]!r} does not exist; this server serves {ctx.model_name!r}"
        )


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, ctx: Context) -> Response:
    body = await read_body(request, ChatCompletionRequest, ctx.limits)
    _check_model(ctx, body.model)
    return await create_chat_completion(ctx, body, request)


@router.post("/v1/completions")
async def completions(request: Request, ctx: Context) -> Response:
    body = await read_body(request, CompletionRequest, ctx.limits)
    _check_model(ctx, body.model)
    return await create_completion(ctx, body, request)


@router.get("/v1/models")
async def models(ctx: Context) -> Response:
    card = {
        "id": ctx.model_name,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "local-engine",
        "max_model_len": ctx.max_model_len,
    }
    return JSONResponse({"object": "list", "data": [card]})


@router.get("/health")
async def health(ctx: Context) -> Response:
    health = ctx.engine.health()
    if not health.ok:
        raise EngineUnavailableError(health.reason)
    return JSONResponse({"status": "ok"})


@router.get("/metrics")
async def metrics(ctx: Context) -> Response:
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)
