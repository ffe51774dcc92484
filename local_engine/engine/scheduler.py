"""Continuous batching with chunked prefill and preemption by recompute (plain Python, no torch).

Each step spends a token budget (``max_num_batched_tokens``):
1. running sequences that decode (1 token each), oldest first;
2. running sequences part-way through their prompt, a chunk each while budget lasts;
3. waiting sequences, oldest first, while budget, ``max_num_seqs`` and free blocks last; a new
   sequence starts after its prefix-cache hits and may get only a chunk of its prompt.
When a running sequence needs a block and none is free, the newest running sequence is
preempted: its blocks are freed and it goes back to the front of the waiting queue to be
recomputed (its generated tokens are kept and recomputed with the prompt).
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from dataclasses import dataclass, field

from local_engine.engine.block_manager import BlockManager
from local_engine.engine.sequence import FinishReason, Sequence, SequenceStatus
from local_engine.errors import QueueFullError

__all__ = ["ScheduledBatch", "Scheduler"]


@dataclass(slots=True)
class ScheduledBatch:
    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)  # tokens to compute, per seq

    def __len__(self) -> int:
        return len(self.seqs)


def _seq_order(seq: Sequence) -> int:
    return seq.seq_id


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_waiting: int,
    ) -> None:
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_waiting = max_waiting
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # oldest first (by seq_id); the last is preempted first
        self.num_preemptions = 0

    # queue
    def add(self, seq: Sequence) -> None:
        if len(self.waiting) >= self.max_waiting:
            raise QueueFullError(f"waiting queue is full ({self.max_waiting} requests)")
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    # scheduling
    def schedule(self) -> ScheduledBatch:
        budget = self.max_num_batched_tokens
        scheduled: dict[Sequence, int] = {}
        preempted = False
        decodes = [s for s in self.running if s.num_tokens - s.num_computed_tokens == 1]
        prefills = [s for s in self.running if s.num_tokens - s.num_computed_tokens > 1]
        for seq in decodes + prefills:
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:  # preempted earlier in this step
                continue
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            while not self.block_manager.can_append(seq, n):
                victim = self.running[-1]
                self._preempt(victim)
                preempted = True
                budget += scheduled.pop(victim, 0)
                if victim is seq:
                    break
            else:
                self.block_manager.append_slots(seq, n)
                scheduled[seq] = n
                budget -= n
        if not preempted:  # admitting now would only take the blocks just freed back
            budget = self._admit(scheduled, budget)
        return ScheduledBatch(list(scheduled), list(scheduled.values()))

    def _admit(self, scheduled: dict[Sequence, int], budget: int) -> int:
        bm = self.block_manager
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            hits = bm.match_prefix(seq)
            num_cached = len(hits) * bm.block_size
            n = min(seq.num_tokens - num_cached, budget)
            if not bm.can_allocate(hits, num_cached + n):
                break
            self.waiting.popleft()
            bm.allocate(seq, hits, n)
            seq.status = SequenceStatus.RUNNING
            insort(self.running, seq, key=_seq_order)
            scheduled[seq] = n
            budget -= n
        return budget

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    # after the model ran
    def postprocess(self, batch: ScheduledBatch) -> None:
        """Advance each scheduled sequence past the tokens just computed."""
        publish = self.block_manager.publish
        for seq, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
            seq.num_computed_tokens += n
            publish(seq)

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """End ``seq`` (done or aborted) wherever it is, freeing its blocks."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        else:
            return
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
