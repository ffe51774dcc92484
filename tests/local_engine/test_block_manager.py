"""Block manager: paging, ref counts, prefix caching by hash chain, LRU eviction (no torch)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from local_engine.engine.block_manager import BlockManager
from local_engine.engine.sequence import Sequence
from local_engine.sampling_params import SamplingParams

BS = 4


def make_seq(tokens: list[int]) -> Sequence:
    return Sequence(tokens, SamplingParams(), block_size=BS)


def compute(bm: BlockManager, seq: Sequence, n: int | None = None) -> None:
    """What one engine step does for ``seq``: reserve, 'compute' n tokens, publish."""
    n = seq.num_tokens - seq.num_computed_tokens if n is None else n
    bm.append_slots(seq, n)
    seq.num_computed_tokens += n
    bm.publish(seq)


def admit(bm: BlockManager, seq: Sequence, n: int | None = None) -> list[int]:
    hits = bm.match_prefix(seq)
    cached = len(hits) * BS
    n = seq.num_tokens - cached if n is None else n
    assert bm.can_allocate(hits, cached + n)
    bm.allocate(seq, hits, n)
    return hits


def test_importing_scheduler_and_block_manager_does_not_import_torch():
    code = (
        "import sys, local_engine.engine.scheduler, local_engine.engine.block_manager;"
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_allocate_covers_tokens_and_free_returns_blocks():
    bm = BlockManager(num_blocks=8, block_size=BS)
    seq = make_seq(list(range(10)))
    admit(bm, seq)
    assert len(seq.block_table) == 3 and len(set(seq.block_table)) == 3
    assert bm.num_free_blocks == 5
    assert bm.usage == pytest.approx(3 / 8)
    bm.free(seq)
    assert seq.block_table == [] and bm.num_free_blocks == 8 and bm.usage == 0.0


def test_append_slots_grows_one_block_per_block_size_tokens():
    bm = BlockManager(num_blocks=8, block_size=BS)
    seq = make_seq([1, 2, 3])
    admit(bm, seq)
    seq.num_computed_tokens = 3
    grown = []
    for t in range(6):
        seq.append_token(100 + t)
        compute(bm, seq, 1)
        grown.append(len(seq.block_table))
    # tokens 4..9 -> blocks needed after each decode: 1 (4 tok), 2, 2, 2, 2, 3
    assert grown == [1, 2, 2, 2, 2, 3]


def test_can_append_and_out_of_blocks():
    bm = BlockManager(num_blocks=2, block_size=BS)
    seq = make_seq(list(range(8)))
    admit(bm, seq)
    seq.num_computed_tokens = 8
    seq.append_token(9)
    assert not bm.can_append(seq, 1)
    with pytest.raises(RuntimeError):
        bm.append_slots(seq, 1)


def test_prefix_hit_shares_published_blocks_and_leaves_a_token_to_compute():
    bm = BlockManager(num_blocks=16, block_size=BS)
    a = make_seq(list(range(10)))  # 2 full blocks + 2
    admit(bm, a)
    compute(bm, a)
    b = make_seq(list(range(8)) + [50, 51, 52])  # shares the 2 full blocks
    hits = admit(bm, b)
    assert hits == a.block_table[:2]
    assert b.block_table[:2] == a.block_table[:2]
    assert b.num_computed_tokens == 8 and b.num_cached_tokens == 8
    assert bm.ref_count(hits[0]) == 2
    assert bm.prefix_cache_queries == 10 + 11 and bm.prefix_cache_hits == 8
    # exactly-full prompt: the last block is recomputed so the step yields logits
    c = make_seq(list(range(8)))
    assert bm.match_prefix(c) == a.block_table[:1]


def test_hash_chains_over_the_whole_prefix():
    bm = BlockManager(num_blocks=16, block_size=BS)
    a = make_seq([1, 2, 3, 4, 5, 6, 7, 8, 9])
    admit(bm, a)
    compute(bm, a)
    # same second block, different first block: no hit at all
    b = make_seq([0, 2, 3, 4, 5, 6, 7, 8, 9])
    assert bm.match_prefix(b) == []


def test_only_computed_full_blocks_are_published():
    bm = BlockManager(num_blocks=16, block_size=BS)
    a = make_seq(list(range(12)))
    admit(bm, a, 6)  # chunk ends mid second block
    a.num_computed_tokens = 6
    bm.publish(a)
    twin = make_seq(list(range(12)))
    assert bm.match_prefix(twin) == a.block_table[:1]
    compute(bm, a)
    assert bm.match_prefix(twin) == a.block_table[:2]  # 3rd block is the one left to compute


def test_freed_cached_blocks_stay_hittable_until_evicted_lru_tail_first():
    bm = BlockManager(num_blocks=4, block_size=BS)
    a = make_seq(list(range(13)))  # 4 blocks, 3 full
    admit(bm, a)
    compute(bm, a)
    table = list(a.block_table)
    bm.free(a)
    assert bm.num_free_blocks == 4 and bm.usage == 0.0
    again = make_seq(list(range(13)))
    assert bm.match_prefix(again) == table[:3]
    # taking one new block evicts the least recently freed: a's tail first
    other = make_seq([99])
    admit(bm, other)
    assert other.block_table == [table[3]]
    assert bm.match_prefix(again) == table[:3]  # the partial tail had no hash; all full still hit
    other2 = make_seq([98, 97, 96, 95, 94])
    admit(bm, other2)  # 2 blocks: evicts table[2] then table[1]
    assert other2.block_table == [table[2], table[1]]
    assert bm.match_prefix(again) == table[:1]


def test_can_allocate_counts_revived_free_blocks():
    bm = BlockManager(num_blocks=3, block_size=BS)
    a = make_seq(list(range(9)))
    admit(bm, a)
    compute(bm, a)
    bm.free(a)
    b = make_seq(list(range(9)))
    hits = bm.match_prefix(b)
    assert len(hits) == 2
    assert bm.can_allocate(hits, 9)  # 2 revived + 1 new = 3 free blocks
    assert not bm.can_allocate(hits, 13)  # would need a 4th


def test_twin_blocks_computed_in_the_same_step_keep_the_first_copy():
    bm = BlockManager(num_blocks=8, block_size=BS)
    a, b = make_seq(list(range(6))), make_seq(list(range(6)))
    admit(bm, a)
    admit(bm, b)
    compute(bm, a)
    compute(bm, b)
    assert a.block_table[0] != b.block_table[0]
    c = make_seq(list(range(6)))
    assert bm.match_prefix(c) == [a.block_table[0]]
    bm.free(a)
    bm.free(b)
    assert bm.num_free_blocks == 8


def test_prefix_caching_disabled_never_hits():
    bm = BlockManager(num_blocks=8, block_size=BS, enable_prefix_caching=False)
    a = make_seq(list(range(9)))
    admit(bm, a)
    compute(bm, a)
    assert bm.match_prefix(make_seq(list(range(9)))) == []
    assert bm.prefix_cache_queries == 0


def test_allocate_twice_is_an_error_and_bad_sizes_rejected():
    bm = BlockManager(num_blocks=8, block_size=BS)
    a = make_seq([1, 2])
    admit(bm, a)
    with pytest.raises(RuntimeError):
        bm.allocate(a, [], 1)
    with pytest.raises(ValueError):
        BlockManager(num_blocks=0, block_size=BS)
