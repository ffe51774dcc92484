"""prepare_step on the SDPA path: decodes sorted longest first and cut into length groups."""

from __future__ import annotations

import torch

from local_engine.engine.sequence import Sequence
from local_engine.engine.step_inputs import (
    GROUP_MIN_SAVING_TOKENS,
    decode_group_bounds,
    prepare_step,
)
from local_engine.sampling_params import SamplingParams

BS = 16


def test_bounds_keep_similar_lengths_together():
    assert decode_group_bounds([700, 650, 600]) == [(0, 3)]
    # half the longest but saving fewer than GROUP_MIN_SAVING_TOKENS padded tokens: not worth a call
    short = GROUP_MIN_SAVING_TOKENS
    assert decode_group_bounds([short, short // 2, 1]) == [(0, 3)]
    long = 2 * GROUP_MIN_SAVING_TOKENS + 100
    assert decode_group_bounds([long, long - 5, 40, 30]) == [(0, 2), (2, 4)]


def _decoding(request_id: str, length: int, first_block: int) -> Sequence:
    seq = Sequence(list(range(10, 10 + length)), SamplingParams(max_tokens=4), BS, request_id)
    seq.block_table = list(range(first_block, first_block + (length + BS - 1) // BS))
    seq.num_computed_tokens = length - 1
    return seq


def test_prepare_step_groups_decodes_and_maps_rows_back():
    seqs = [
        _decoding("a", 20, 0),
        _decoding("b", 700, 10),
        _decoding("c", 650, 60),
        _decoding("d", 30, 110),
    ]
    step = prepare_step(seqs, [1, 1, 1, 1], BS, torch.device("cpu"), torch.float32, None)
    assert step.order == [1, 2, 3, 0]  # longest context first
    groups = step.meta.decode
    assert [(g.start, g.end) for g in groups] == [(0, 2), (2, 4)]
    # each group pads only to its own longest context
    assert [g.block_tables.shape[1] for g in groups] == [(700 + BS - 1) // BS, (30 + BS - 1) // BS]
    assert [g.mask.shape[-1] for g in groups] == [g.block_tables.shape[1] * BS for g in groups]
    # the new token of each row sits in its own sequence's slot
    expected = [
        seqs[i].block_table[(seqs[i].num_tokens - 1) // BS] * BS + (seqs[i].num_tokens - 1) % BS
        for i in step.order
    ]
    assert step.meta.slot_mapping.tolist() == expected
    assert step.input_ids.tolist() == [seqs[i].token_ids[-1] for i in step.order]
