"""OpenTelemetry traces over OTLP/HTTP, with the GenAI semantic conventions.

Off unless ``tracing.otlp_endpoint`` is set: the pipeline then holds ``None`` and pays one
``is None`` test per request. When on: one SERVER span per request (``chat auto``) continuing the
client's ``traceparent`` if it sent one, and one CLIENT span per upstream attempt (retries and
fallbacks each get theirs) whose context goes to the upstream as ``traceparent``. Spans are
batched and exported by the SDK's background thread, off the event loop. The provider is the
gateway's own (never the process-global one), so tests and embedders are not affected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.config.schema import BackendConfig, TracingConfig

__all__ = ["Tracing", "build_tracing"]

log = logging.getLogger("gateway.tracing")

T = TypeVar("T")
EXPORT_DELAY_MS = 500
OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}
_PROPAGATOR = TraceContextTextMapPropagator()


def provider_name(cfg: BackendConfig) -> str:
    """gen_ai.provider.name: the litellm provider prefix, else openai / self_hosted."""
    if cfg.kind == "litellm" and "/" in cfg.model:
        return cfg.model.split("/", 1)[0]
    return "self_hosted" if cfg.self_hosted else "openai"


class Tracing:
    def __init__(self, cfg: TracingConfig) -> None:
        if not cfg.otlp_endpoint:
            raise ValueError("tracing needs otlp_endpoint")
        self.provider = TracerProvider(resource=Resource.create({"service.name": cfg.service_name}))
        exporter = OTLPSpanExporter(endpoint=cfg.otlp_endpoint, headers=dict(cfg.headers) or None)
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=EXPORT_DELAY_MS)
        )
        self.tracer = self.provider.get_tracer("gateway")

    def start_request(self, operation: str, vmodel: str, headers: Mapping[str, str]) -> Span:
        parent = _PROPAGATOR.extract(carrier=headers) if "traceparent" in headers else None
        op = OPERATIONS.get(operation, operation)
        span = self.tracer.start_span(f"{op} {vmodel}", context=parent, kind=SpanKind.SERVER)
        span.set_attribute("gen_ai.operation.name", op)
        span.set_attribute("gen_ai.request.model", vmodel)
        return span

    def wrap_attempt(
        self,
        parent: Span,
        name: str,
        cfg: BackendConfig,
        headers: dict[str, str],
        call: Callable[[], Awaitable[T]],
    ) -> Callable[[], Awaitable[T]]:
        """``call`` inside a CLIENT span; ``headers`` (what goes upstream) gets its traceparent."""
        ctx: Context = trace.set_span_in_context(parent)

        async def attempt() -> T:
            span = self.tracer.start_span(f"attempt {name}", context=ctx, kind=SpanKind.CLIENT)
            span.set_attribute("gateway.backend", name)
            span.set_attribute("gen_ai.provider.name", provider_name(cfg))
            span.set_attribute("gen_ai.request.model", cfg.model)
            _PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))
            try:
                result = await call()
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            finally:
                span.end()
            return result

        return attempt

    provider_name = staticmethod(provider_name)

    @staticmethod
    def finish(span: Span, attrs: dict[str, Any], status: int) -> None:
        for k, v in attrs.items():
            if v is not None:
                span.set_attribute(k, v)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    async def close(self) -> None:
        await asyncio.to_thread(self.provider.shutdown)  # flushes what is batched


def build_tracing(cfg: TracingConfig) -> Tracing | None:
    if not cfg.otlp_endpoint:
        return None
    log.info("tracing: OTLP/HTTP to %s", cfg.otlp_endpoint)
    return Tracing(cfg)
