"""End-to-end equivalences on the real ModelRunner (CPU, fp32, a tiny random checkpoint):
batched == one at a time; prefix cache == without; preemption + recompute == uninterrupted;
chunked prefill == whole prefill; stop strings, max_tokens and seeds exact."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from local_engine.config import EngineConfig
from local_engine.demo_model import build_tiny_checkpoint
from local_engine.engine.llm_engine import LLMEngine
from local_engine.sampling_params import SamplingParams

BS = 8
GREEDY = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return Path(build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "qwen2", arch="qwen2"))


@pytest.fixture(scope="module")
def vocab(model_dir) -> int:
    return LLMEngine(config(model_dir)).tokenizer.vocab_size


def config(model_dir: Path, **kw) -> EngineConfig:
    base = dict(
        model=str(model_dir), device="cpu", dtype="float32", block_size=BS, num_kv_blocks=256
    )
    return EngineConfig(**(base | kw))


def prompts_with_shared_prefix(vocab: int, n: int = 6, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    low = min(100, vocab // 4)  # clear of special tokens
    shared = [rng.randrange(low, vocab) for _ in range(2 * BS + 3)]
    out = []
    for i in range(n):
        own = [rng.randrange(low, vocab) for _ in range(rng.randrange(1, 3 * BS))]
        out.append((shared + own) if i % 2 else own + shared[: i + 1])
    return out


@pytest.fixture(scope="module")
def prompts(vocab) -> list[list[int]]:
    return prompts_with_shared_prefix(vocab)


@pytest.fixture(scope="module")
def alone(model_dir, prompts) -> list[list[int]]:
    """The reference: each prompt on its own, whole prefill, no prefix cache, no pressure."""
    results = []
    for p in prompts:
        engine = LLMEngine(config(model_dir, enable_prefix_caching=False))
        results.append(engine.generate([p], GREEDY)[0])
    assert all(len(r) == GREEDY.max_tokens for r in results)
    return results


def test_batched_equals_one_at_a_time(model_dir, prompts, alone):
    engine = LLMEngine(config(model_dir, enable_prefix_caching=False))
    assert engine.generate(prompts, GREEDY) == alone


def test_prefix_cache_equals_no_prefix_cache(model_dir, prompts, alone):
    engine = LLMEngine(config(model_dir, enable_prefix_caching=True))
    first = engine.generate(prompts, GREEDY)
    again = engine.generate(prompts, GREEDY)  # now the shared and repeated prefixes are cached
    assert first == alone and again == alone
    assert engine.stats().prefix_cache_hits >= len(prompts) * BS


@pytest.mark.parametrize("prefix", [False, True])
def test_preemption_and_recompute_equal_uninterrupted(model_dir, prompts, alone, prefix):
    engine = LLMEngine(config(model_dir, num_kv_blocks=12, enable_prefix_caching=prefix))
    assert engine.generate(prompts, GREEDY) == alone
    assert engine.stats().num_preemptions > 0


@pytest.mark.parametrize("budget", [1, BS + 3])
def test_chunked_prefill_equals_whole_prefill(model_dir, prompts, alone, budget):
    engine = LLMEngine(
        config(model_dir, max_num_batched_tokens=budget, enable_prefix_caching=False)
    )
    assert engine.generate(prompts, GREEDY) == alone


def _text_run(engine: LLMEngine, prompt: list[int], params: SamplingParams):
    engine.add_request("t", prompt, params)
    outs = []
    while engine.has_unfinished():
        outs.extend(engine.step())
    return [t for o in outs for t in o.new_token_ids], [o.new_text for o in outs], outs[-1]


def test_stop_strings_cut_exactly_and_never_stream(model_dir, prompts):
    engine = LLMEngine(config(model_dir))
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    ids, pieces, _ = _text_run(engine, prompts[0], params)
    text = "".join(pieces)
    assert len(text) >= 8
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    expected = text[: text.index(stop)]
    sids, spieces, last = _text_run(
        engine,
        prompts[0],
        SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, stop=[stop]),
    )
    assert last.finish_reason == "stop"
    assert "".join(spieces) == expected
    streamed = ""
    for piece in spieces:
        streamed += piece
        assert expected.startswith(streamed)
    assert sids == ids[: len(sids)]  # the same tokens, cut where the stop string completed


def test_max_tokens_exact(model_dir, prompts):
    engine = LLMEngine(config(model_dir))
    for n in (1, 2, 7):
        ids, _, last = _text_run(
            engine, prompts[1], SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
        )
        assert len(ids) == n and last.finish_reason == "length" and last.num_completion_tokens == n


def test_seeds_reproducible_whatever_the_batch(model_dir, prompts):
    sampled = SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True, seed=1234)
    ref = LLMEngine(config(model_dir)).generate([prompts[2]], sampled)[0]
    others = [SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True) for _ in prompts]
    mixed = others[:2] + [sampled] + others[3:]
    engine = LLMEngine(config(model_dir, max_num_batched_tokens=BS + 1, num_kv_blocks=14))
    assert engine.generate(prompts, mixed)[2] == ref
    other_seed = SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True, seed=99)
    assert LLMEngine(config(model_dir)).generate([prompts[2]], other_seed)[0] != ref


def test_batched_equals_alone_when_decodes_split_by_length(model_dir, vocab):
    # contexts far apart in length: the SDPA path attends them in separate decode groups
    rng = random.Random(1)
    low = min(100, vocab // 4)
    mixed = [[rng.randrange(low, vocab) for _ in range(n)] for n in (5, 300, 12, 330, 140)]
    solo = [
        LLMEngine(config(model_dir, enable_prefix_caching=False)).generate([p], GREEDY)[0]
        for p in mixed
    ]
    engine = LLMEngine(config(model_dir, enable_prefix_caching=False))
    assert engine.generate(mixed, GREEDY) == solo
