"""Chat template rendering must equal transformers' apply_chat_template on the same files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from local_engine.tokenizer import ChatTemplateError, Tokenizer

transformers = pytest.importorskip("transformers")

# Qwen2.5-Instruct's template (Hermes-style tools), verbatim.
QWEN25_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# Llama-3-like: bos_token variable, raise_exception, loop controls, namespace.
LLAMA_LIKE_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(n=0) %}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}"
    "{{ raise_exception('bad role ' + message['role']) }}{% endif %}"
    "{% if message['role'] == 'system' and not loop.first %}{% continue %}{% endif %}"
    "{% set ns.n = ns.n + 1 %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}"
    "{% if tools is not none %}{% for t in tools %}{{ t | tojson(indent=2) }}{% endfor %}{% endif %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<s>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": 'Weather for a city <b>& "quotes"</b> \u00e9t\u00e9',
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there!"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "  And 3+3?  "},
    ],
    [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "sunny"},
        {"role": "user", "content": "Thanks, \u00e7a va?"},
    ],
]


def _write_tokenizer_dir(path: Path, chat_template, eos="<|im_end|>", bos=None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    tok = HFTokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [
        "Hello there, what is the weather in Paris today?",
        "The answer is 4.",
        "<tool_call> name arguments city",
    ] * 20
    tok.train_from_iterator(corpus, trainer)
    tok.save(str(path / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": eos,
        "pad_token": "<|endoftext|>",
        "chat_template": chat_template,
    }
    if bos is not None:
        config["bos_token"] = bos
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


def _pairs(path: Path):
    return Tokenizer.from_dir(path), transformers.AutoTokenizer.from_pretrained(str(path))


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("tools", [None, [WEATHER_TOOL]])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_qwen_template_matches_transformers(tmp_path, conversation, tools, add_generation_prompt):
    ours, theirs = _pairs(_write_tokenizer_dir(tmp_path, QWEN25_TEMPLATE))
    expected = theirs.apply_chat_template(
        conversation, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    got = ours.apply_chat_template(
        conversation, tools=tools, add_generation_prompt=add_generation_prompt
    )
    assert got == expected
    if tools:
        assert '"description": "Weather for a city <b>& \\"quotes\\"</b> \u00e9t\u00e9"' in got


@pytest.mark.parametrize("conversation", CONVERSATIONS[:2])
def test_bos_and_tojson_kwargs_match_transformers(tmp_path, conversation):
    ours, theirs = _pairs(
        _write_tokenizer_dir(tmp_path, LLAMA_LIKE_TEMPLATE, eos="<|eot_id|>", bos="<s>")
    )
    for tools in (None, [WEATHER_TOOL]):
        expected = theirs.apply_chat_template(
            conversation, tools=tools, tokenize=False, add_generation_prompt=True
        )
        assert ours.apply_chat_template(conversation, tools=tools) == expected
    assert ours.apply_chat_template(conversation).startswith("<s><|start_header_id|>")


def test_chat_template_file_and_named_templates(tmp_path):
    path = _write_tokenizer_dir(tmp_path, None)
    (path / "chat_template.jinja").write_text(
        "{% for m in messages %}[{{ m.content }}]{% endfor %}"
    )
    extra = path / "additional_chat_templates"
    extra.mkdir()
    (extra / "tool_use.jinja").write_text("TOOLS:{{ tools | length }}")
    ours, theirs = _pairs(path)
    conv = CONVERSATIONS[1]
    assert (
        ours.apply_chat_template(conv)
        == theirs.apply_chat_template(conv, tokenize=False)
        == "[You are terse.][What is 2+2?][4][  And 3+3?  ]"
    )
    assert ours.apply_chat_template(conv, tools=[WEATHER_TOOL]) == "TOOLS:1"


def test_encode_decode_and_special_ids_match_transformers(tmp_path):
    path = _write_tokenizer_dir(tmp_path, QWEN25_TEMPLATE)
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [0, 2]}))
    ours, theirs = _pairs(path)
    text = ours.apply_chat_template(CONVERSATIONS[2], tools=[WEATHER_TOOL])
    ids = ours.encode(text)
    assert ids == theirs.encode(text, add_special_tokens=False)
    assert ours.decode(ids, skip_special_tokens=False) == text
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
    assert ours.eos_token_ids == {0, 2, theirs.convert_tokens_to_ids("<|im_end|>")}
    assert ours.vocab_size == len(theirs)
    assert ours.bos_token_id is None


def test_errors_are_clear(tmp_path):
    ours = Tokenizer.from_dir(_write_tokenizer_dir(tmp_path / "a", None))
    with pytest.raises(ChatTemplateError, match="no chat template"):
        ours.apply_chat_template([{"role": "user", "content": "hi"}])
    llama = Tokenizer.from_dir(_write_tokenizer_dir(tmp_path / "b", LLAMA_LIKE_TEMPLATE, bos="<s>"))
    with pytest.raises(ChatTemplateError, match="bad role robot"):
        llama.apply_chat_template([{"role": "robot", "content": "hi"}])
    with pytest.raises(ChatTemplateError, match="empty"):
        llama.apply_chat_template([])
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.from_dir(tmp_path / "missing")


@pytest.mark.parametrize("tools", [None, [WEATHER_TOOL]])
def test_demo_checkpoint_template_matches_transformers(tmp_path, tools):
    from local_engine.demo_model import build_tiny_checkpoint

    ours, theirs = _pairs(build_tiny_checkpoint(tmp_path / "demo"))
    for conversation in CONVERSATIONS:
        expected = theirs.apply_chat_template(
            conversation, tools=tools, tokenize=False, add_generation_prompt=True
        )
        assert ours.apply_chat_template(conversation, tools=tools) == expected


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 10**9}, "range"),  # the sandbox's range limit: OverflowError
        ({"n": 0}, "division"),  # ZeroDivisionError
        ({"n": "x"}, "failed"),  # TypeError
    ],
)
def test_template_errors_from_client_kwargs_are_chat_template_errors(tmp_path, kwargs, match):
    """chat_template_kwargs reach the template: whatever they make it raise is the client's 400,
    not a 500 (a range too big, a division by zero, a wrong type)."""
    template = (
        "{% if n is number and n > 100 %}{{ range(n) | list | length }}"
        "{% elif n is number %}{{ 10 // n }}{% else %}{{ n + 1 }}{% endif %}"
        "{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    ours = Tokenizer.from_dir(_write_tokenizer_dir(tmp_path / "t", template))
    with pytest.raises(ChatTemplateError, match=match):
        ours.apply_chat_template([{"role": "user", "content": "hi"}], **kwargs)
