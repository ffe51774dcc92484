"""LLMEngine edge cases with a paged fake runner: stops, limits, abort, queue bound, validation, stats.

The model-level equivalences (batched == alone, prefix cache, preemption, chunked prefill) run
against the real ModelRunner in test_engine_equivalence.py; here the fake's simulated KV cache
checks the paging bookkeeping under heavy memory pressure.
"""

from __future__ import annotations

import random

import pytest

from local_engine.config import EngineConfig
from local_engine.engine.llm_engine import LLMEngine
from local_engine.errors import QueueFullError, RequestValidationError
from local_engine.sampling_params import SamplingParams
from tests.local_engine.engine_fakes import EOS, PagedFakeRunner, train_tokenizer

BS = 4


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer()


def make_engine(tok, num_blocks=64, scripts=None, max_model_len=512, **cfg) -> LLMEngine:
    config = EngineConfig(model="unused", block_size=BS, **cfg)
    runner = PagedFakeRunner(
        num_blocks, BS, tok.get_vocab_size(), max_model_len, {tok.token_to_id(EOS)}, scripts
    )
    return LLMEngine(config, runner=runner, tokenizer=tok)


def run(engine: LLMEngine) -> dict[str, list]:
    outs: dict[str, list] = {}
    while engine.has_unfinished():
        for o in engine.step():
            outs.setdefault(o.request_id, []).append(o)
    return outs


def random_prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    shared = [rng.randrange(1, 300) for _ in range(9)]
    return [
        (shared if i % 2 else []) + [rng.randrange(1, 300) for _ in range(rng.randrange(1, 20))]
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "num_blocks,budget,max_seqs,prefix",
    [(256, 2048, 64, True), (24, 8, 16, True), (24, 8, 16, False), (12, 5, 4, True)],
)
def test_paging_under_pressure_matches_one_at_a_time(tok, num_blocks, budget, max_seqs, prefix):
    prompts = random_prompts(12)
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    alone = [make_engine(tok, 256).generate([p], params)[0] for p in prompts]
    engine = make_engine(
        tok,
        num_blocks,
        max_num_batched_tokens=budget,
        max_num_seqs=max_seqs,
        enable_prefix_caching=prefix,
    )
    assert engine.generate(prompts, params) == alone
    assert all(len(o) == 12 for o in alone)
    stats = engine.stats()
    assert stats.kv_cache_usage == 0.0 and stats.num_running == stats.num_waiting == 0
    if num_blocks < 30:
        assert stats.num_preemptions > 0
    if (
        prefix and budget < 100
    ):  # with a big budget all start in one step, before any block is cached
        assert stats.prefix_cache_hits > 0


def test_max_tokens_is_exact(tok):
    engine = make_engine(tok)
    engine.add_request("a", [5, 6, 7], SamplingParams(max_tokens=5, ignore_eos=True))
    outs = run(engine)["a"]
    assert [len(o.new_token_ids) for o in outs] == [1] * 5
    assert outs[-1].finished and outs[-1].finish_reason == "length"
    assert outs[-1].num_completion_tokens == 5 and outs[-1].num_prompt_tokens == 3


def test_eos_stops_unless_ignore_eos(tok):
    eos = tok.token_to_id(EOS)
    hello = tok.encode("hello world").ids
    script = hello + [eos] + hello
    engine = make_engine(tok, scripts={"a": script, "b": script})
    engine.add_request("a", [1], SamplingParams(max_tokens=50))
    engine.add_request("b", [1], SamplingParams(max_tokens=len(script), ignore_eos=True))
    outs = run(engine)
    a = outs["a"]
    assert [t for o in a for t in o.new_token_ids] == hello + [
        eos
    ]  # eos counted, like OpenAI usage
    assert "".join(o.new_text for o in a) == "hello world"
    assert a[-1].finish_reason == "stop"
    assert outs["b"][-1].finish_reason == "length" and outs["b"][-1].num_completion_tokens == len(
        script
    )


def test_stop_token_ids_stop_and_their_text_is_dropped(tok):
    words = tok.encode("hello world, the END").ids
    engine = make_engine(tok, scripts={"a": words})
    engine.add_request("a", [1], SamplingParams(max_tokens=50, stop_token_ids=[words[2]]))
    outs = run(engine)["a"]
    assert [t for o in outs for t in o.new_token_ids] == words[:3]
    assert "".join(o.new_text for o in outs) == tok.decode(words[:2])
    assert outs[-1].finish_reason == "stop"


@pytest.mark.parametrize("stop", [["STOP"], ["ST", "zzz"], ["OP here"], ["! more"]])
def test_stop_strings_are_never_streamed(tok, stop):
    text = "hello world. STOP here! more text follows"
    ids = tok.encode(text).ids
    engine = make_engine(tok, scripts={"a": ids})
    engine.add_request("a", [1], SamplingParams(max_tokens=100, stop=stop))
    outs = run(engine)["a"]
    expected = text[: min(text.index(s) for s in stop if s in text)]
    streamed = ""
    for o in outs:
        streamed += o.new_text
        assert expected.startswith(streamed)
    assert streamed == expected
    assert outs[-1].finish_reason == "stop" and outs[-1].finished


def test_held_back_text_is_released_at_length_finish(tok):
    ids = tok.encode("hello world ST").ids
    engine = make_engine(tok, scripts={"a": ids})
    engine.add_request("a", [1], SamplingParams(max_tokens=len(ids), stop=["STOP"]))
    outs = run(engine)["a"]
    assert "".join(o.new_text for o in outs) == "hello world ST"
    assert outs[-1].finish_reason == "length"


def test_max_model_len_ends_with_length_and_too_long_prompts_are_rejected(tok):
    engine = make_engine(tok, max_model_len=10)
    engine.add_request("a", list(range(1, 8)), SamplingParams(max_tokens=100, ignore_eos=True))
    outs = run(engine)["a"]
    assert outs[-1].finish_reason == "length" and outs[-1].num_completion_tokens == 3
    with pytest.raises(RequestValidationError):
        engine.add_request("b", list(range(1, 11)), SamplingParams())


def test_max_model_len_is_capped_by_kv_capacity(tok):
    engine = make_engine(tok, num_blocks=3, max_model_len=512)
    assert engine.max_model_len == 3 * BS
    engine.add_request("a", [1, 2, 3], SamplingParams(max_tokens=100, ignore_eos=True))
    assert run(engine)["a"][-1].num_completion_tokens == 3 * BS - 3


def test_validation_errors(tok):
    engine = make_engine(tok)
    with pytest.raises(RequestValidationError):
        engine.add_request("a", [], SamplingParams())
    with pytest.raises(RequestValidationError):
        engine.add_request("a", [1, tok.get_vocab_size()], SamplingParams())
    with pytest.raises(RequestValidationError):
        engine.add_request("a", [-1], SamplingParams())
    engine.add_request("a", [1], SamplingParams())
    with pytest.raises(RequestValidationError, match="already in use"):
        engine.add_request("a", [1], SamplingParams())
    assert isinstance(RequestValidationError("x"), ValueError)


def test_queue_full_when_waiting_queue_is_at_its_bound(tok):
    engine = make_engine(tok, max_waiting=2)
    engine.add_request("a", [1], SamplingParams(max_tokens=2))
    engine.add_request("b", [1], SamplingParams(max_tokens=2))
    with pytest.raises(QueueFullError):
        engine.add_request("c", [1], SamplingParams(max_tokens=2))
    assert "c" not in engine._requests
    engine.step()  # a and b start running: the queue has room again
    engine.add_request("c", [1], SamplingParams(max_tokens=2))
    assert set(run(engine)) == {"a", "b", "c"}


def test_generate_feeds_a_bounded_queue(tok):
    engine = make_engine(tok, max_waiting=2, max_num_seqs=2)
    outs = engine.generate(random_prompts(7), SamplingParams(max_tokens=3, ignore_eos=True))
    assert [len(o) for o in outs] == [3] * 7


def test_abort_frees_blocks_and_reports_abort(tok):
    engine = make_engine(tok, num_blocks=32)
    engine.add_request("a", list(range(1, 20)), SamplingParams(max_tokens=50, ignore_eos=True))
    engine.add_request("b", list(range(1, 20)), SamplingParams(max_tokens=50, ignore_eos=True))
    engine.step()
    engine.step()
    assert engine.stats().kv_cache_usage > 0
    engine.abort_request("a")
    engine.abort_request("unknown")  # no-op
    outs = engine.step()
    aborted = [o for o in outs if o.request_id == "a"]
    assert len(aborted) == 1 and aborted[0].finished and aborted[0].finish_reason == "abort"
    engine.abort_request("b")
    run(engine)
    assert engine.stats().kv_cache_usage == 0.0 and not engine.has_unfinished()


def test_logprobs_are_passed_through_when_requested(tok):
    engine = make_engine(tok)
    engine.add_request(
        "a", [1, 2], SamplingParams(max_tokens=2, ignore_eos=True, logprobs=True, top_logprobs=1)
    )
    engine.add_request("b", [1, 2], SamplingParams(max_tokens=2, ignore_eos=True))
    outs = run(engine)
    lp = outs["a"][0].logprobs
    assert lp == [
        {"token_id": outs["a"][0].new_token_ids[0], "logprob": -1.0, "top_logprobs": [(2, -1.0)]}
    ]
    assert all(o.logprobs is None for o in outs["b"])


def test_stats_count_tokens_and_prefix_hits(tok):
    engine = make_engine(tok)
    prompt = list(range(1, 14))  # 3 full blocks + 1
    engine.generate([prompt], SamplingParams(max_tokens=4, ignore_eos=True))
    engine.generate([prompt], SamplingParams(max_tokens=4, ignore_eos=True))
    s = engine.stats()
    assert s.prompt_tokens == 26 and s.generation_tokens == 8
    assert s.prefix_cache_queries == 26 and s.prefix_cache_hits == 12
    assert s.num_running == 0 and s.kv_cache_usage == 0.0
