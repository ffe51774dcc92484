"""OpenAI request -> (prompt token ids, SamplingParams), with a clear 400 for what we cannot serve."""

from __future__ import annotations

import json
from typing import Any

from local_engine.sampling_params import MAX_TOP_LOGPROBS, SamplingParams
from local_engine.server.body import MAX_JSON_DEPTH, nesting_depth
from local_engine.server.errors import invalid, too_long
from local_engine.server.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    ContentPart,
    ToolCall,
)
from local_engine.tokenizer import Tokenizer

__all__ = ["chat_prompt_ids", "completion_prompt_ids", "sampling_params", "tools_enabled"]

CHAT_ROLES = {"system", "developer", "user", "assistant", "tool"}
# Keys the template gets from us; chat_template_kwargs may not override them.
_RESERVED_TEMPLATE_KWARGS = {"messages", "tools", "documents", "add_generation_prompt"}


# prompts
def _text_content(content: str | list[ContentPart] | None, i: int) -> str | None:
    if not isinstance(content, list):
        return content
    if any(part.type != "text" for part in content):
        raise invalid("only text content parts are supported", f"messages.{i}.content")
    return "\n".join(part.text for part in content)


def _tool_call_for_template(call: ToolCall) -> dict[str, Any]:
    # OpenAI sends arguments as a JSON string; templates render them with tojson, so pass the
    # object (or the string as it came, when it is not JSON)
    out = call.model_dump(exclude_none=True)
    try:
        arguments = json.loads(call.function.arguments)
    except (json.JSONDecodeError, RecursionError):
        return out
    if nesting_depth(arguments) <= MAX_JSON_DEPTH:  # the template re-encodes it recursively
        out["function"]["arguments"] = arguments
    return out


def normalize_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    out = []
    for i, message in enumerate(messages):
        role = message.role
        if role not in CHAT_ROLES:
            raise invalid(
                f"role must be one of {sorted(CHAT_ROLES)}, got {role[:40]!r}",
                f"messages.{i}.role",
            )
        msg = message.model_dump(exclude_unset=True)  # unknown keys reach the template as sent
        msg["role"] = "system" if role == "developer" else role
        msg["content"] = _text_content(message.content, i)
        if msg["content"] is None and role != "assistant":
            raise invalid(f"a {role} message needs content", f"messages.{i}.content")
        if message.tool_calls is not None:
            msg["tool_calls"] = [_tool_call_for_template(c) for c in message.tool_calls]
        out.append(msg)
    return out


def tools_enabled(req: ChatCompletionRequest) -> bool:
    """Whether to parse tool calls out of the output (rejects tool_choice we cannot honour)."""
    choice = req.tool_choice
    if choice is not None and choice not in ("auto", "none"):
        raise invalid(
            "only tool_choice 'auto' and 'none' are supported (no constrained decoding)",
            "tool_choice",
        )
    return bool(req.tools) and choice != "none"


def _encode(
    tokenizer: Tokenizer, text: str, max_model_len: int | None, param: str, special: bool
) -> list[int]:
    if max_model_len is None:
        return tokenizer.encode(text, add_special_tokens=special)
    ids = tokenizer.encode_within(text, max_model_len, add_special_tokens=special)
    if ids is None:
        raise too_long(
            f"the prompt is longer than this model's context length {max_model_len}", param
        )
    return ids


def chat_prompt_ids(
    req: ChatCompletionRequest, tokenizer: Tokenizer, max_model_len: int | None = None
) -> list[int]:
    """Render and encode the conversation (CPU work: the server runs this off the event loop).
    With ``max_model_len``, a prompt over it fails fast, before most of it is encoded."""
    if req.response_format is not None and req.response_format.get("type", "text") != "text":
        raise invalid("response_format other than text is not supported", "response_format")
    kwargs = dict(req.chat_template_kwargs or {})
    if clash := _RESERVED_TEMPLATE_KWARGS & kwargs.keys():
        raise invalid(f"chat_template_kwargs may not set {sorted(clash)}", "chat_template_kwargs")
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    prompt = tokenizer.apply_chat_template(
        normalize_messages(req.messages),
        tools=tools,
        add_generation_prompt=req.add_generation_prompt,
        **kwargs,
    )
    return _encode(tokenizer, prompt, max_model_len, "messages", special=False)


def completion_prompt_ids(
    req: CompletionRequest, tokenizer: Tokenizer, max_model_len: int | None = None
) -> list[int]:
    if req.echo:
        raise invalid("echo is not supported", "echo")
    if req.suffix:
        raise invalid("suffix is not supported", "suffix")
    prompt: Any = req.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise invalid(
                "send one prompt per request (batched prompts are not supported)", "prompt"
            )
        prompt = prompt[0]
    if isinstance(prompt, str):
        ids = _encode(tokenizer, prompt, max_model_len, "prompt", special=True)
    else:
        ids = list(prompt)  # the engine checks the ids against the model's vocabulary
    if not ids:
        raise invalid("prompt must not be empty", "prompt")
    return ids


# sampling
def _max_tokens(
    requested: int | None, prompt_len: int, max_model_len: int, prompt_param: str
) -> int:
    room = max_model_len - prompt_len
    if room < 1:
        raise too_long(
            f"the prompt has {prompt_len} tokens; this model's context length is {max_model_len}",
            prompt_param,
        )
    if requested is None:
        return room
    if requested < 1:
        raise invalid("max_tokens must be >= 1", "max_tokens")
    if requested > room:
        raise too_long(
            f"max_tokens={requested} plus the prompt's {prompt_len} tokens exceeds this "
            f"model's context length {max_model_len}",
            "max_tokens",
        )
    return requested


def _logprob_fields(req: ChatCompletionRequest | CompletionRequest) -> tuple[bool, int]:
    if isinstance(req, ChatCompletionRequest):
        top = req.top_logprobs or 0
        if top and not req.logprobs:
            raise invalid("top_logprobs requires logprobs=true", "top_logprobs")
        want, param = req.logprobs, "top_logprobs"
    else:
        want, top, param = req.logprobs is not None, req.logprobs or 0, "logprobs"
    if not 0 <= top <= MAX_TOP_LOGPROBS:
        raise invalid(f"{param} must be in [0, {MAX_TOP_LOGPROBS}]", param)
    return want, top


def _logit_bias(raw: dict[str, float] | None) -> dict[int, float]:
    out = {}
    for key, value in (raw or {}).items():
        try:
            token_id = int(key)
        except ValueError:
            raise invalid(
                f"logit_bias keys must be token ids, got {key[:40]!r}", "logit_bias"
            ) from None
        out[token_id] = value
    return out


def sampling_params(
    req: ChatCompletionRequest | CompletionRequest, prompt_len: int, max_model_len: int
) -> SamplingParams:
    if req.n != 1:
        raise invalid("only n=1 is supported; send several requests instead", "n")
    if req.stream_options is not None and not req.stream:
        raise invalid("stream_options is only allowed with stream=true", "stream_options")
    requested = req.max_tokens
    if isinstance(req, ChatCompletionRequest) and req.max_completion_tokens is not None:
        requested = req.max_completion_tokens
    logprobs, top_logprobs = _logprob_fields(req)
    prompt_param = "messages" if isinstance(req, ChatCompletionRequest) else "prompt"
    max_tokens = _max_tokens(requested, prompt_len, max_model_len, prompt_param)
    logit_bias = _logit_bias(req.logit_bias)
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    try:
        return SamplingParams(
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=-1 if req.top_k in (None, 0) else req.top_k,
            min_p=req.min_p or 0.0,
            seed=req.seed,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
            max_tokens=max_tokens,
            stop=[s for s in stop if s],
            stop_token_ids=list(req.stop_token_ids or []),
            ignore_eos=req.ignore_eos,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            logit_bias=logit_bias,
        )
    except ValueError as exc:
        param = str(exc).split(" ", 1)[0]
        raise invalid(str(exc), param if param.isidentifier() else None) from exc
