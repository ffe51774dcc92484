"""CUDA graphs for decode-only steps (CUDA only; needs the Triton decode kernel).

One graph per padded batch size, captured once at start-up over static input buffers and a
shared memory pool. A step copies its inputs into the buffers, pads the batch up to the next
captured size with rows that read and write a spare KV block, and replays. Steps with prefill
chunks, or more decodes than the largest graph, run eagerly.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

import torch

from local_engine.engine.step_inputs import StepInputs
from local_engine.layers.attention import AttentionGroup, AttentionMetadata

if TYPE_CHECKING:
    from local_engine.engine.model_runner import ModelRunner

MAX_GRAPH_BATCH = 256


def graph_batch_sizes(max_num_seqs: int) -> list[int]:
    top = min(max_num_seqs, MAX_GRAPH_BATCH)
    return sorted({s for s in [1, 2, 4, 8, *range(16, top + 1, 16)] if s <= top} | {top})


class DecodeGraphs:
    def __init__(self, runner: ModelRunner, spare_block: int) -> None:
        self.runner = runner
        self.sizes = graph_batch_sizes(runner.config.max_num_seqs)
        n, dev, bs = self.sizes[-1], runner.device, runner.block_size
        max_blocks = (runner.max_model_len + bs - 1) // bs
        self.spare_block = spare_block
        # static buffers; padded rows attend one token in the spare block and write there
        self.input_ids = torch.zeros(n, dtype=torch.int64, device=dev)
        self.positions = torch.zeros(n, dtype=torch.int64, device=dev)
        self.slots = torch.full((n,), spare_block * bs, dtype=torch.int64, device=dev)
        self.block_tables = torch.full((n, max_blocks), spare_block, dtype=torch.int64, device=dev)
        self.ctx_lens = torch.ones(n, dtype=torch.int32, device=dev)
        self.hidden = torch.zeros(n, runner.args.hidden_size, dtype=runner.dtype, device=dev)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}

    def _meta(self, size: int) -> AttentionMetadata:
        group = AttentionGroup(0, size, self.block_tables[:size], None, self.ctx_lens[:size])
        return AttentionMetadata(
            self.slots[:size], decode=[group], sliding_window=self.runner.args.sliding_window
        )

    @classmethod
    @torch.inference_mode()
    def capture(cls, runner: ModelRunner, spare_block: int) -> DecodeGraphs:
        self = cls(runner, spare_block)
        pool = None
        for size in reversed(self.sizes):  # largest first, so smaller graphs reuse its pool
            args = (self.input_ids[:size], self.positions[:size], self._meta(size))
            self.hidden[:size] = runner.model(*args)  # warm-up (Triton compile, allocator)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool):
                self.hidden[:size] = runner.model(*args)
            pool = graph.pool() if pool is None else pool
            self.graphs[size] = graph
        torch.cuda.synchronize(runner.device)
        return self

    def run(self, step: StepInputs) -> torch.Tensor:
        """hidden [n, hidden] for a decode-only step."""
        n = step.input_ids.shape[0]
        groups = step.meta.decode
        g = groups[0] if groups is not None and len(groups) == 1 else None
        slots = step.meta.slot_mapping
        if n > self.sizes[-1] or g is None or g.ctx_lens is None or slots is None:
            return self.runner.model(step.input_ids, step.positions, step.meta)
        size = self.sizes[bisect.bisect_left(self.sizes, n)]
        self.input_ids[:n] = step.input_ids
        self.positions[:n] = step.positions
        self.slots[:n] = slots
        self.slots[n:size] = self.spare_block * self.runner.block_size
        self.block_tables[:n, : g.block_tables.shape[1]] = g.block_tables
        self.block_tables[n:size, 0] = self.spare_block
        self.ctx_lens[:n] = g.ctx_lens
        self.ctx_lens[n:size] = 1
        self.graphs[size].replay()
        return self.hidden[:n]
