"""The batched sampler: filters agree with transformers' warpers, draws follow the distribution,
seeded draws do not depend on the batch, penalties and logprobs follow OpenAI/vLLM semantics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from local_engine.checkpoint import HFCheckpoint
from local_engine.config import EngineConfig
from local_engine.engine.model_runner import ModelRunner
from local_engine.engine.sequence import Sequence
from local_engine.layers.sampler import (
    _min_p,
    _top_k_top_p,
    apply_penalties,
    build_sampling_batch,
    compute_logprobs,
    sample,
)
from local_engine.sampling_params import SamplingParams

logits_process = pytest.importorskip("transformers.generation.logits_process")

V = 64
CPU = torch.device("cpu")


def gens(seed: int = 0) -> tuple[torch.Generator, torch.Generator]:
    return torch.Generator().manual_seed(seed), torch.Generator()


def draw(
    logits: torch.Tensor,
    params: list[SamplingParams],
    positions: list[int] | None = None,
    histories=None,
    seed: int = 0,
) -> list[int]:
    positions = positions or [10] * len(params)
    batch = build_sampling_batch(params, positions, histories, logits.shape[1], CPU)
    return sample(logits.clone(), batch, *gens(seed)).tolist()


@pytest.fixture
def logits() -> torch.Tensor:
    return torch.randn(6, V, generator=torch.Generator().manual_seed(1)) * 3


def test_greedy_is_argmax_and_ignores_generators(logits) -> None:
    greedy = [SamplingParams(temperature=0.0)] * logits.shape[0]
    assert (
        draw(logits, greedy, seed=1) == draw(logits, greedy, seed=2) == logits.argmax(-1).tolist()
    )


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.5, top_k=1),
        SamplingParams(temperature=1.5, top_p=1e-6),
        SamplingParams(temperature=1.5, min_p=1.0),
    ],
)
def test_filters_that_leave_one_token_give_argmax(logits, params) -> None:
    assert draw(logits, [params] * logits.shape[0]) == logits.argmax(-1).tolist()


def test_greedy_and_random_rows_mix(logits) -> None:
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=1.0)] * 3
    out = draw(logits, params)
    assert out[0::2] == logits.argmax(-1).tolist()[0::2]


def test_logit_bias_per_row_for_greedy_and_random_rows(logits) -> None:
    argmax = logits.argmax(-1).tolist()
    params = [
        SamplingParams(temperature=0.0, logit_bias={7: 100.0}),
        SamplingParams(temperature=0.0, logit_bias={argmax[1]: -100.0}),
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=1.0, logit_bias={9: 100.0}),
        SamplingParams(temperature=1.0, top_k=3, logit_bias={11: 100.0}),
        SamplingParams(temperature=0.0),
    ]
    out = draw(logits, params)
    assert out[0] == 7 and out[1] != argmax[1] and out[2] == argmax[2]
    assert out[3] == 9 and out[4] == 11 and out[5] == argmax[5]


def test_top_k_beyond_the_vocabulary_is_off(logits) -> None:
    huge = [SamplingParams(temperature=1.0, top_k=2**31 - 1, seed=3)] * logits.shape[0]
    off = [SamplingParams(temperature=1.0, seed=3)] * logits.shape[0]
    assert draw(logits, huge) == draw(logits, off)


@pytest.mark.parametrize(
    "kw",
    [
        {"top_k": 2**63},
        {"top_k": 2**31},
        {"temperature": float("nan")},
        {"temperature": float("inf")},
        {"temperature": 2.5},
        {"presence_penalty": float("-inf")},
        {"repetition_penalty": 1e39},
        {"min_p": float("nan")},
        {"top_p": float("nan")},
        {"seed": 2**64},
        {"logit_bias": {1: float("nan")}},
        {"stop": ["x"] * 17},
        {"stop": ["x" * 1025]},
    ],
)
def test_sampling_params_reject_what_would_break_the_sampler(kw) -> None:
    with pytest.raises(ValueError):
        SamplingParams(**kw)


def test_tiny_temperature_samples_greedily(logits) -> None:
    assert SamplingParams(temperature=1e-30).greedy
    params = [SamplingParams(temperature=1e-30)] * logits.shape[0]
    assert draw(logits, params) == logits.argmax(-1).tolist()


@pytest.mark.parametrize("k", [1, 5, 63])
def test_top_k_matches_transformers(logits, k) -> None:
    ours = _top_k_top_p(logits, torch.full((logits.shape[0],), k), None)
    ref = logits_process.TopKLogitsWarper(top_k=k)(None, logits.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_matches_transformers(logits, p) -> None:
    ours = _top_k_top_p(logits, None, torch.full((logits.shape[0],), p))
    ref = logits_process.TopPLogitsWarper(top_p=p)(None, logits.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))


@pytest.mark.parametrize("m", [0.01, 0.2, 0.7])
def test_min_p_matches_transformers(logits, m) -> None:
    ours = _min_p(logits, torch.full((logits.shape[0],), m))
    ref = logits_process.MinPLogitsWarper(min_p=m)(None, logits.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))


def test_per_row_filters_in_one_batch(logits) -> None:
    top_k = torch.tensor([1, 2, 3, V, V, V])
    top_p = torch.tensor([1.0, 1.0, 1.0, 0.3, 0.6, 1.0])
    kept = (~torch.isinf(_top_k_top_p(logits, top_k, top_p))).sum(-1)
    assert kept[:3].tolist() == [1, 2, 3] and kept[5] == V
    for row in (3, 4):
        ref = logits_process.TopPLogitsWarper(top_p=float(top_p[row]))(
            None, logits[row : row + 1].clone()
        )
        assert kept[row] == (~torch.isinf(ref)).sum()


def test_draws_follow_the_tempered_distribution() -> None:
    base = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    n = 6000
    out = torch.tensor(draw(base.expand(n, -1).contiguous(), [SamplingParams(temperature=0.7)] * n))
    freq = torch.bincount(out, minlength=base.numel()).float() / n
    torch.testing.assert_close(freq, (base / 0.7).softmax(-1), atol=0.02, rtol=0)


def test_top_k_draws_stay_in_the_top_k(logits) -> None:
    n = 500
    row = logits[0].expand(n, -1).contiguous()
    out = set(draw(row, [SamplingParams(temperature=2.0, top_k=4)] * n))
    assert out == set(logits[0].topk(4).indices.tolist())


def test_seeded_rows_do_not_depend_on_batch_or_global_generator(logits) -> None:
    seeded = SamplingParams(temperature=1.0, seed=1234)
    alone = draw(logits[2:3], [seeded], positions=[17], seed=0)
    mixed = draw(
        logits[[0, 2, 1]],
        [SamplingParams(temperature=1.0), seeded, SamplingParams(seed=5)],
        positions=[3, 17, 9],
        seed=99,
    )
    assert mixed[1] == alone[0]
    # the stream moves with the position, so a seeded request does not repeat one draw forever
    flat = logits[0].expand(40, -1).contiguous()
    draws = draw(flat, [SamplingParams(temperature=2.0, seed=1234)] * 40, positions=list(range(40)))
    assert len(set(draws)) > 5


def test_repetition_penalty_matches_transformers(logits) -> None:
    prompt, output = [1, 2, 3, 40], [5, 5, 60]
    params = [SamplingParams(temperature=0.0, repetition_penalty=1.3)] * logits.shape[0]
    batch = build_sampling_batch(params, [7] * 6, [(prompt, output)] * 6, V, CPU)
    ours = apply_penalties(logits.clone(), batch.penalties)
    ids = torch.tensor([prompt + output] * logits.shape[0])
    ref = logits_process.RepetitionPenaltyLogitsProcessor(penalty=1.3)(ids, logits.clone())
    torch.testing.assert_close(ours, ref)


def test_presence_and_frequency_penalties_count_generated_tokens_only(logits) -> None:
    prompt, output = [1, 2], [5, 5, 6]
    params = [SamplingParams(temperature=0.0, presence_penalty=0.5, frequency_penalty=0.25)]
    batch = build_sampling_batch(params, [5], [(prompt, output)], V, CPU)
    ours = apply_penalties(logits[:1].clone(), batch.penalties)[0]
    expected = logits[0].clone()
    expected[5] -= 0.5 + 2 * 0.25
    expected[6] -= 0.5 + 0.25
    torch.testing.assert_close(ours, expected)


def test_penalty_changes_a_greedy_choice() -> None:
    row = torch.tensor([[0.0, 3.0, 2.9, 0.0]])
    hist = [([0], [1])]
    assert draw(row, [SamplingParams(temperature=0.0)]) == [1]
    assert draw(row, [SamplingParams(temperature=0.0, frequency_penalty=1.0)], histories=hist) == [
        2
    ]


def test_logprobs_are_raw_log_softmax(logits) -> None:
    tokens = torch.tensor([0, 1, 2, 3, 4, 5])
    chosen, top_vals, top_ids = compute_logprobs(logits, tokens, 3)
    ref = logits.log_softmax(-1)
    torch.testing.assert_close(chosen, ref[torch.arange(6), tokens])
    assert top_ids.tolist() == ref.topk(3).indices.tolist()
    assert compute_logprobs(logits, tokens, 0)[1].shape == (6, 0)


# through the runner


@pytest.fixture(scope="module")
def runner(tiny_checkpoint: Callable[..., Path]) -> ModelRunner:
    d = tiny_checkpoint("qwen2")
    cfg = EngineConfig(
        model=str(d), device="cpu", dtype="float32", block_size=4, num_kv_blocks=64, seed=3
    )
    return ModelRunner(cfg, HFCheckpoint(d))


def _seq(prompt: list[int], params: SamplingParams, first_block: int) -> Sequence:
    seq = Sequence(prompt, params, 4)
    seq.block_table = list(range(first_block, first_block + 8))
    return seq


def test_runner_seeded_sample_same_alone_and_batched(runner) -> None:
    params = SamplingParams(temperature=1.0, seed=42, logprobs=True, top_logprobs=2)
    prompt = [10, 20, 30, 40, 50]
    alone = runner.execute([_seq(prompt, params, 0)], [5])[0]
    others = [
        _seq([7, 8, 9], SamplingParams(temperature=1.0), 8),
        _seq([11] * 6, SamplingParams(top_k=3), 16),
    ]
    batched = runner.execute([others[0], _seq(prompt, params, 24), others[1]], [3, 5, 6])[1]
    assert batched.token_id == alone.token_id
    # logprobs are of the raw logits, whatever the temperature
    raw = runner.prefill_logits(prompt)[-1].log_softmax(-1)
    assert batched.logprob == pytest.approx(float(raw[alone.token_id]), abs=1e-4)
    assert [t for t, _ in batched.top_logprobs] == raw.topk(2).indices.tolist()


def test_runner_unrequested_logprobs_are_none(runner) -> None:
    out = runner.execute([_seq([1, 2, 3], SamplingParams(temperature=0.0), 0)], [3])[0]
    assert out.logprob is None and out.top_logprobs is None
