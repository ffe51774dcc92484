"""OpenAI request -> (prompt token ids, SamplingParams), with a clear 400 for what we cannot serve."""

from __future__ import annotations

import json
from typing import Any

from local_engine.sampling_params import MAX_TOP_LOGPROBS, SamplingParams
from local_engine.server.errors import CONTEXT_LENGTH_EXCEEDED, invalid
from local_engine.server.protocol import ChatCompletionRequest, CompletionRequest
from local_engine.tokenizer import Tokenizer

__all__ = ["chat_prompt_ids", "completion_prompt_ids", "sampling_params", "tools_enabled"]

CHAT_ROLES = {"system", "developer", "user", "assistant", "tool"}
# Keys the template gets from us; chat_template_kwargs may not override them.
_RESERVED_TEMPLATE_KWARGS = {"messages", "tools", "documents", "add_generation_prompt"}


# prompts
def _text_content(content: Any, i: int) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise invalid("only text content parts are supported", f"messages.{i}.content")
            parts.append(str(part.get("text", "")))
        return "\n".join(parts)
    raise invalid("content must be a string or a list of text parts", f"messages.{i}.content")


def _tool_call_for_template(call: dict) -> dict:
    # OpenAI sends arguments as a JSON string; templates render them with tojson, so pass the object
    fn = call.get("function")
    if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
        try:
            fn = {**fn, "arguments": json.loads(fn["arguments"])}
        except json.JSONDecodeError:
            return call
        return {**call, "function": fn}
    return call


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise invalid(
                f"role must be one of {sorted(CHAT_ROLES)}, got {role!r}", f"messages.{i}.role"
            )
        msg = {
            **message,
            "role": "system" if role == "developer" else role,
            "content": _text_content(message.get("content"), i),
        }
        if msg["content"] is None and role != "assistant":
            raise invalid(f"a {role} message needs content", f"messages.{i}.content")
        if isinstance(msg.get("tool_calls"), list):
            msg["tool_calls"] = [_tool_call_for_template(c) for c in msg["tool_calls"]]
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


def chat_prompt_ids(req: ChatCompletionRequest, tokenizer: Tokenizer) -> list[int]:
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
    return tokenizer.encode(prompt, add_special_tokens=False)


def completion_prompt_ids(req: CompletionRequest, tokenizer: Tokenizer) -> list[int]:
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
        ids = tokenizer.encode(prompt, add_special_tokens=True)
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
        raise invalid(
            f"the prompt has {prompt_len} tokens; this model's context length is {max_model_len}",
            prompt_param,
            code=CONTEXT_LENGTH_EXCEEDED,
        )
    if requested is None:
        return room
    if requested < 1:
        raise invalid("max_tokens must be >= 1", "max_tokens")
    if requested > room:
        raise invalid(
            f"max_tokens={requested} plus the prompt's {prompt_len} tokens exceeds this "
            f"model's context length {max_model_len}",
            "max_tokens",
            code=CONTEXT_LENGTH_EXCEEDED,
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
            max_tokens=_max_tokens(requested, prompt_len, max_model_len, prompt_param),
            stop=[s for s in stop if s],
            stop_token_ids=list(req.stop_token_ids or []),
            ignore_eos=req.ignore_eos,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            logit_bias=_logit_bias(req.logit_bias),
        )
    except ValueError as exc:
        param = str(exc).split(" ", 1)[0]
        raise invalid(str(exc), param if param.isidentifier() else None) from exc
