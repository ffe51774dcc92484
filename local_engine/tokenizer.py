"""Tokenizer: a `tokenizers.Tokenizer` plus the chat template, read from a local HF checkpoint dir.

Files read: ``tokenizer.json`` (required), ``tokenizer_config.json`` (special tokens, chat template),
``chat_template.jinja`` / ``additional_chat_templates/*.jinja`` (newer transformers layout, wins
over the config like in transformers), ``special_tokens_map.json`` (legacy) and
``generation_config.json`` / ``config.json`` (eos ids).

The chat template is rendered with jinja2 in an environment built like transformers'
``apply_chat_template`` (sandboxed, ``trim_blocks``/``lstrip_blocks``, ``loopcontrols``, a
non-HTML-escaping ``tojson``, ``raise_exception``, ``strftime_now``), with the named special
tokens as template variables and ``None``-valued message keys dropped, so the prompt string is
the one transformers would build from the same files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as HFTokenizer

from local_engine.errors import ChatTemplateError

__all__ = ["ChatTemplateError", "Tokenizer"]

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"
# The named special tokens transformers passes to every chat template.
SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _token_content(value: Any) -> str | None:
    # tokenizer_config stores a token as a string or as a serialized AddedToken dict
    if isinstance(value, Mapping):
        return value.get("content")
    return value if isinstance(value, str) else None


def _as_id_set(value: Any) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value}


def _load_chat_templates(path: Path, tokenizer_config: dict) -> str | dict[str, str] | None:
    templates: dict[str, str] = {}
    if (path / CHAT_TEMPLATE_FILE).is_file():
        templates["default"] = (path / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    if (path / CHAT_TEMPLATE_DIR).is_dir():
        for file in sorted((path / CHAT_TEMPLATE_DIR).glob("*.jinja")):
            templates[file.stem] = file.read_text(encoding="utf-8")
    if templates:
        return templates["default"] if list(templates) == ["default"] else templates
    configured = tokenizer_config.get("chat_template")
    if isinstance(configured, list):  # [{"name": ..., "template": ...}, ...]
        return {item["name"]: item["template"] for item in configured}
    return configured


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: Any = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    # jinja's own tojson HTML-escapes; transformers overrides it with plain json.dumps
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


# A message's reasoning may come under any of these names; templates read the first (as transformers)
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _alias_reasoning(message: dict) -> dict:
    reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


def _build_jinja_env() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


ENCODE_PIECE_CHARS = 16384  # ~1 ms of encoding; see Tokenizer.encode_within


class Tokenizer:
    def __init__(
        self,
        tokenizer: HFTokenizer,
        special_tokens: dict[str, str],
        chat_template: str | dict[str, str] | None,
        eos_token_ids: set[int],
    ) -> None:
        self._tok = tokenizer
        self.special_tokens = special_tokens  # {"bos_token": "<s>", ...} as the template sees them
        self.chat_template = chat_template
        self.eos_token_ids = eos_token_ids
        bos = special_tokens.get("bos_token")
        self.bos_token_id: int | None = tokenizer.token_to_id(bos) if bos else None
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self._env = _build_jinja_env()
        self._compiled: dict[str, jinja2.Template] = {}

    @classmethod
    def from_dir(cls, path: Path | str) -> Tokenizer:
        path = Path(path)
        if not (path / TOKENIZER_FILE).is_file():
            raise FileNotFoundError(
                f"{path} has no {TOKENIZER_FILE} (only fast tokenizers are supported)"
            )
        hf_tok = HFTokenizer.from_file(str(path / TOKENIZER_FILE))
        config = _read_json(path / TOKENIZER_CONFIG_FILE)
        legacy_map = _read_json(path / SPECIAL_TOKENS_MAP_FILE)
        special: dict[str, str] = {}
        for name in SPECIAL_TOKEN_NAMES:
            content = _token_content(config.get(name, legacy_map.get(name)))
            if content is not None:
                special[name] = content
        eos_ids = _as_id_set(_read_json(path / "generation_config.json").get("eos_token_id"))
        eos_ids |= _as_id_set(_read_json(path / "config.json").get("eos_token_id"))
        if (
            "eos_token" in special
            and (eos_id := hf_tok.token_to_id(special["eos_token"])) is not None
        ):
            eos_ids.add(eos_id)
        return cls(hf_tok, special, _load_chat_templates(path, config), eos_ids)

    # encode / decode
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_within(
        self, text: str, max_tokens: int, add_special_tokens: bool = False
    ) -> list[int] | None:
        """Encode ``text``, or return None when it has more than ``max_tokens`` tokens.

        A long text is first counted piece by piece, stopping once the count is past
        ``max_tokens``, so a prompt far over the context costs about one context's worth of
        encoding, not the whole text's (the Rust encoder holds the GIL while it runs). Pieces end
        before whitespace, where pre-tokenizers split anyway; each piece may add a token (a
        prefix space), so the count is lowered by one per piece before comparing.
        """
        if len(text) > ENCODE_PIECE_CHARS:
            count = pieces = start = 0
            while start < len(text):
                end = start + ENCODE_PIECE_CHARS
                if end < len(text):
                    cut = max(text.rfind(" ", start + 1, end), text.rfind("\n", start + 1, end))
                    end = cut if cut > start else end
                count += len(self._tok.encode(text[start:end], add_special_tokens=False).ids)
                pieces += 1
                if count - pieces > max_tokens:
                    return None
                start = end
        ids = self.encode(text, add_special_tokens=add_special_tokens)
        return ids if len(ids) <= max_tokens else None

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    @cached_property
    def special_token_ids(self) -> set[int]:
        return {t_id for t_id, tok in self._tok.get_added_tokens_decoder().items() if tok.special}

    # chat template
    def _template_source(self, tools: list[dict] | None) -> str:
        template = self.chat_template
        if isinstance(template, dict):
            if tools is not None and "tool_use" in template:
                return template["tool_use"]
            if "default" in template:
                return template["default"]
            raise ChatTemplateError(f"several chat templates and no default: {sorted(template)}")
        if template is None:
            raise ChatTemplateError("this model has no chat template; use /v1/completions")
        return template

    def apply_chat_template(
        self,
        messages: list[dict],
        tools: list[dict] | None = None,
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> str:
        """Render a conversation to the prompt string (same output as transformers'
        ``apply_chat_template(..., tokenize=False)``). Raises ChatTemplateError."""
        if not messages:
            raise ChatTemplateError("messages must not be empty")
        source = self._template_source(tools)
        template = self._compiled.get(source)
        if template is None:
            try:
                template = self._compiled[source] = self._env.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise ChatTemplateError(f"chat template does not compile: {exc}") from exc
        # like transformers: drop None-valued keys (OpenAI sends content=None with tool_calls)
        messages = [
            _alias_reasoning({k: v for k, v in m.items() if v is not None}) for m in messages
        ]
        try:
            return template.render(
                messages=messages,
                tools=tools,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **{**self.special_tokens, **template_kwargs},
            )
        except (jinja2.TemplateError, TypeError, ValueError, LookupError, ArithmeticError) as exc:
            # the client's messages, tools and chat_template_kwargs are the template's input:
            # a wrong type, a value out of range (the sandbox's range limit is an OverflowError),
            # a division by zero are theirs to fix
            raise ChatTemplateError(f"chat template failed: {exc}") from exc
