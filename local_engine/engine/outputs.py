"""What the engine hands out: per-step request outputs and engine-wide stats."""

from __future__ import annotations

from dataclasses import dataclass

from local_engine.errors import EngineError

__all__ = ["EngineStats", "RequestOutput"]


@dataclass(slots=True)
class RequestOutput:
    request_id: str
    new_token_ids: list[int]
    new_text: str  # text released this step (a possible stop string is held back, never leaked)
    finished: bool
    finish_reason: str | None  # "stop" | "length" | "abort" | "error"
    num_prompt_tokens: int
    num_completion_tokens: int
    num_cached_tokens: int
    logprobs: list[dict] | None = None  # per new token: {"token_id", "logprob", "top_logprobs"}
    error: EngineError | None = None  # set when finish_reason is "error": why this request failed


@dataclass(slots=True, frozen=True)
class EngineStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float  # 0-1, blocks held by live sequences
    prefix_cache_queries: int  # prompt tokens looked up (counter)
    prefix_cache_hits: int  # prompt tokens found (counter)
    num_preemptions: int  # counter
    prompt_tokens: int  # prompt tokens of requests that finished their prefill (counter)
    generation_tokens: int  # sampled tokens (counter)
