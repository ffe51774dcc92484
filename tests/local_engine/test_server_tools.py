"""Tool calling end to end with a model that really emits a Hermes ``<tool_call>``.

The tiny random checkpoint is fine-tuned for a few seconds (transformers, CPU) until greedy
decoding of one fixed tool conversation reproduces a tool call; the server then has to build the
same prompt (chat template + tools), run the engine, and parse the call into OpenAI
``tool_calls``, streamed and not.
"""

from __future__ import annotations

import json
import shutil

import openai
import pytest
from server_harness import running_server
from test_server import engine_config

from local_engine.demo_model import build_tiny_checkpoint
from local_engine.tokenizer import Tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MODEL = "tiny-demo"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
ARGUMENTS = {"city": "Paris"}
TARGET = (
    'Checking.<tool_call>\n{"name": "get_weather", "arguments": '
    + json.dumps(ARGUMENTS)
    + "}\n</tool_call>"
)
MAX_STEPS = 400


def _teach_tool_call(src, dst) -> None:
    tok = Tokenizer.from_dir(src)
    prompt = tok.encode(tok.apply_chat_template(MESSAGES, tools=TOOLS))
    target = tok.encode(TARGET) + [min(tok.eos_token_ids)]
    ids = torch.tensor([prompt + target])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100  # loss on the answer only
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(MAX_STEPS):
        out = model(input_ids=ids, labels=labels)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if step % 10 == 9:
            # teacher-forced argmax right everywhere (with margin) => greedy reproduces it
            pred = out.logits[0, len(prompt) - 1 : -1].argmax(-1)
            if pred.tolist() == target and out.loss.item() < 0.05:
                break
    else:
        raise AssertionError("the tiny model did not learn the tool call")
    model.save_pretrained(str(dst))
    for f in src.iterdir():
        if not (dst / f.name).exists():
            shutil.copy(f, dst / f.name)
    _tool_tags_not_special(dst)


def _tool_tags_not_special(path) -> None:
    """As in Qwen2.5's own tokenizer files: <tool_call> tags are added tokens but not special,
    so decoding with skip_special_tokens keeps them in the text for the tool parser."""
    tags = {"<tool_call>", "</tool_call>"}
    tok_file = path / "tokenizer.json"
    data = json.loads(tok_file.read_text())
    for added in data["added_tokens"]:
        if added["content"] in tags:
            added["special"] = False
    tok_file.write_text(json.dumps(data))
    cfg_file = path / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    for added in cfg.get("added_tokens_decoder", {}).values():
        if added["content"] in tags:
            added["special"] = False
    cfg_file.write_text(json.dumps(cfg))


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools")
    src = build_tiny_checkpoint(root / "base", arch="qwen2")
    _teach_tool_call(src, root / "taught")
    with running_server(engine_config(root / "taught")) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def test_tool_call_non_streaming(client):
    r = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, temperature=0, max_tokens=64
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == ARGUMENTS


def test_tool_call_streaming(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, temperature=0, max_tokens=64, stream=True
    )
    content, calls, finish = "", {}, None
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            if tc.id is not None:
                assert tc.index not in calls
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            calls[tc.index]["arguments"] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert content == "Checking." and finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == ARGUMENTS


def test_tool_choice_none_leaves_text_and_forced_choice_is_400(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        tools=TOOLS,
        temperature=0,
        max_tokens=64,
        tool_choice="none",
    )
    assert r.choices[0].message.tool_calls is None
    assert "<tool_call>" in r.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required"
        )
    assert err.value.body["param"] == "tool_choice"


def test_tool_result_round_trip_renders(client):
    # the assistant's call (arguments as a JSON string, as OpenAI sends it) and the tool result
    messages = MESSAGES + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps(ARGUMENTS)},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21 C, sunny"},
    ]
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, max_tokens=4)
    assert r.usage.prompt_tokens > 0 and r.choices[0].finish_reason in (
        "stop",
        "length",
        "tool_calls",
    )
