"""Scheduler: continuous batching, chunked prefill, decodes first, preemption, bounded queue (no torch)."""

from __future__ import annotations

import pytest

from local_engine.engine.block_manager import BlockManager
from local_engine.engine.scheduler import Scheduler
from local_engine.engine.sequence import FinishReason, Sequence, SequenceStatus
from local_engine.errors import QueueFullError
from local_engine.sampling_params import SamplingParams

BS = 4


def make(num_blocks=64, max_num_seqs=8, budget=64, max_waiting=16, prefix=True) -> Scheduler:
    bm = BlockManager(num_blocks, BS, enable_prefix_caching=prefix)
    return Scheduler(bm, max_num_seqs, budget, max_waiting)


def seq_of(n: int, start: int = 0) -> Sequence:
    return Sequence(list(range(start, start + n)), SamplingParams(), block_size=BS)


def step(s: Scheduler) -> dict[int, int]:
    """One step with a fake model that emits token 7 whenever a seq reaches its end."""
    batch = s.schedule()
    s.postprocess(batch)
    for seq in batch.seqs:
        if seq.num_computed_tokens == seq.num_tokens:
            seq.append_token(7)
    return {seq.seq_id: n for seq, n in zip(batch.seqs, batch.num_new_tokens, strict=True)}


def check_block_accounting(s: Scheduler) -> None:
    live = [q for q in s.running]
    for q in live:
        assert len(q.block_table) * BS >= q.num_computed_tokens
    held = {b for q in live for b in q.block_table}
    assert s.block_manager.num_blocks - s.block_manager.num_free_blocks == len(held)


def test_new_requests_join_the_running_batch_every_step():
    s = make()
    a = seq_of(5)
    s.add(a)
    assert step(s) == {a.seq_id: 5}
    b = seq_of(3, start=100)
    s.add(b)
    assert step(s) == {a.seq_id: 1, b.seq_id: 3}  # a decodes while b prefills
    c = seq_of(2, start=200)
    s.add(c)
    assert step(s) == {a.seq_id: 1, b.seq_id: 1, c.seq_id: 2}
    assert [q.seq_id for q in s.running] == [a.seq_id, b.seq_id, c.seq_id]


def test_chunked_prefill_respects_the_token_budget():
    s = make(budget=16)
    a = seq_of(40)
    s.add(a)
    assert step(s) == {a.seq_id: 16}
    assert a.num_tokens == 40  # no token sampled mid-prompt
    assert step(s) == {a.seq_id: 16}
    assert step(s) == {a.seq_id: 8}
    assert a.num_tokens == 41
    assert step(s) == {a.seq_id: 1}


def test_decodes_go_first_then_prefill_chunks_then_new_requests():
    s = make(budget=10)
    a = seq_of(3)
    s.add(a)
    step(s)  # a now decodes
    b = seq_of(30, start=100)
    s.add(b)
    assert step(s) == {a.seq_id: 1, b.seq_id: 9}
    c = seq_of(4, start=300)
    s.add(c)
    # a decodes (1), b continues its prompt with the rest of the budget (9), c waits
    assert step(s) == {a.seq_id: 1, b.seq_id: 9}
    assert c.status is SequenceStatus.WAITING
    assert step(s) == {a.seq_id: 1, b.seq_id: 9}
    assert step(s) == {a.seq_id: 1, b.seq_id: 3, c.seq_id: 4}
    check_block_accounting(s)


def test_max_num_seqs_caps_the_running_batch():
    s = make(max_num_seqs=2)
    seqs = [seq_of(2, start=10 * i) for i in range(3)]
    for q in seqs:
        s.add(q)
    assert set(step(s)) == {seqs[0].seq_id, seqs[1].seq_id}
    s.finish(seqs[0], FinishReason.STOP)
    assert set(step(s)) == {seqs[1].seq_id, seqs[2].seq_id}


def test_preemption_recomputes_the_newest_running_sequence():
    s = make(num_blocks=4, prefix=False)
    a, b = seq_of(4), seq_of(4, start=100)
    s.add(a)
    s.add(b)
    step(s)  # both prefilled: 1 block each, both now hold 5 tokens
    step(s)  # each decode needs a 2nd block: 4 blocks in use
    assert s.block_manager.num_free_blocks == 0
    for _ in range(3):
        step(s)  # tokens 6..8 fit in the 2nd blocks
    # a needs a 3rd block: b (newest) is preempted and its blocks freed
    assert step(s) == {a.seq_id: 1}
    assert s.num_preemptions == 1
    assert b.status is SequenceStatus.WAITING and b.num_computed_tokens == 0
    assert b.block_table == [] and s.waiting[0] is b
    assert b.num_tokens == 9  # generated tokens are kept, to be recomputed
    check_block_accounting(s)
    s.finish(a, FinishReason.LENGTH)
    assert step(s) == {b.seq_id: 9}  # recompute everything, then continue
    assert b.num_tokens == 10 and b.status is SequenceStatus.RUNNING


def test_a_sequence_preempts_itself_when_it_is_the_newest():
    s = make(num_blocks=3, prefix=False, budget=64)
    a, b = seq_of(7), seq_of(4, start=100)
    s.add(a)
    s.add(b)
    step(s)  # a: 2 blocks (8th slot free), b: 1 full block; no block left
    assert s.block_manager.num_free_blocks == 0
    # a's decode fits its 2nd block; b's needs a new one and b is the newest: it yields
    assert step(s) == {a.seq_id: 1}
    assert b.status is SequenceStatus.WAITING and b.block_table == []
    assert a.status is SequenceStatus.RUNNING
    assert s.num_preemptions == 1
    check_block_accounting(s)


def test_no_admission_in_a_step_that_preempted():
    s = make(num_blocks=4, prefix=False)
    a, b = seq_of(4), seq_of(4, start=100)
    s.add(a)
    s.add(b)
    for _ in range(5):
        step(s)
    c = seq_of(1, start=500)
    s.add(c)
    batch = step(s)
    assert s.num_preemptions == 1 and c.seq_id not in batch
    assert list(s.waiting) == [b, c]  # the preempted (older) one goes first


def test_prefix_hits_skip_cached_tokens():
    s = make()
    a = seq_of(10)
    s.add(a)
    step(s)
    b = seq_of(10)
    s.add(b)
    assert step(s) == {a.seq_id: 1, b.seq_id: 2}  # 2 full blocks from the cache
    assert b.num_cached_tokens == 8
    assert s.block_manager.prefix_cache_hits == 8


def test_bounded_waiting_queue_raises_queue_full():
    s = make(max_waiting=2)
    s.add(seq_of(2))
    s.add(seq_of(2))
    with pytest.raises(QueueFullError) as err:
        s.add(seq_of(2))
    assert err.value.status == 503 and err.value.retry_after > 0
    step(s)  # both admitted: room again
    s.add(seq_of(2))


def test_finish_frees_blocks_of_running_and_waiting_sequences():
    s = make(num_blocks=8, max_num_seqs=1)
    a, b = seq_of(6), seq_of(6, start=50)
    s.add(a)
    s.add(b)
    step(s)
    s.finish(b, FinishReason.ABORT)  # still waiting
    assert b.status is SequenceStatus.FINISHED and b.finish_reason is FinishReason.ABORT
    s.finish(a, FinishReason.ABORT)
    assert not s.has_unfinished()
    assert s.block_manager.num_free_blocks == 8
    s.finish(a, FinishReason.ABORT)  # idempotent


def test_many_requests_under_memory_pressure_all_complete():
    s = make(num_blocks=10, max_num_seqs=6, budget=12, prefix=True)
    seqs = [seq_of(3 + i % 5, start=(i % 3) * 4) for i in range(12)]
    for q in seqs:
        s.add(q)
    for _ in range(500):
        if not s.has_unfinished():
            break
        step(s)
        check_block_accounting(s)
        for q in list(s.running):
            if q.num_completion_tokens >= 6:
                s.finish(q, FinishReason.LENGTH)
    assert not s.has_unfinished()
    assert all(q.num_completion_tokens == 6 for q in seqs)
    assert s.num_preemptions > 0
    assert s.block_manager.usage == 0.0
