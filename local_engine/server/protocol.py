"""OpenAI request bodies we accept.

Unknown fields are ignored (``extra="ignore"``), not rejected: OpenAI clients and gateways send
fields we have no use for (``user``, ``metadata``, ``store``, ``parallel_tool_calls``...). Fields we
cannot honour are rejected with a clear 400 in ``sampling.py`` instead of being silently dropped
(``n > 1``, ``echo``, ``suffix``, structured ``response_format``, forced ``tool_choice``).
vLLM-style extras (``top_k``, ``min_p``, ``repetition_penalty``, ``ignore_eos``,
``stop_token_ids``, ``chat_template_kwargs``) come in the body, e.g. the SDK's ``extra_body``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "StreamOptions",
    "ToolCall",
    "ToolDefinition",
]


class _Body(BaseModel):
    # NaN/Infinity never pass (orjson already refuses them; this covers any other way in)
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class StreamOptions(_Body):
    include_usage: bool = False


class FunctionDefinition(_Body):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(_Body):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class ContentPart(_Body):
    type: str
    text: str = ""


class ToolCallFunction(_Body):
    name: str
    arguments: str  # a JSON string, as OpenAI sends it


class ToolCall(_Body):
    id: str | None = None
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(BaseModel):
    """One message; the fields the server reads are typed, others reach the template as sent."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    role: str  # checked against the roles we serve in request_mapping (a clear 400 there)
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class _SamplingFields(_Body):
    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: str | list[str] | None = None
    logit_bias: dict[str, float] | None = None  # token id (as a string, like OpenAI) -> bias
    # vLLM-style extras
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool = True


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None
