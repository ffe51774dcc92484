"""Per-step model inputs for a mixed batch of prefill chunks and decodes, rebuilt every step.

Python touches each sequence once (its new token ids and its block table); positions, cache
slots and attention masks are then computed with a handful of vectorised tensor ops. Flat
token order is decodes first, then prefill chunks, so attention can run one padded SDPA call
per group; ``order`` maps rows back to the caller's sequence order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from local_engine.engine.sequence import Sequence
from local_engine.errors import EngineError
from local_engine.layers.attention import AttentionGroup, AttentionMetadata


@dataclass(slots=True)
class StepInputs:
    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    meta: AttentionMetadata
    order: list[int]  # row r of this step is seqs[order[r]]
    sample_rows: list[int]  # rows (in step order) whose computation reaches the end of the sequence
    logits_indices: torch.Tensor  # [N] flat index of the last token of each sampling row


def _block_tables(tables: list[list[int]], device: torch.device) -> torch.Tensor:
    width = max(len(t) for t in tables)
    return torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int64, device=device)


def _group(
    start: int, end: int, bt: torch.Tensor, q_list: list[int], ctx_list: list[int],
    block_size: int, window: int | None, dtype: torch.dtype,
) -> AttentionGroup:
    # bt: [B, NB] covering every row's context; q_list, ctx_list: B ints
    q_max = max(q_list)
    bt = bt[:, : (max(ctx_list) + block_size - 1) // block_size]
    q_lens = torch.tensor(q_list, dtype=torch.int64, device=bt.device)  # [B]
    ctx_lens = torch.tensor(ctx_list, dtype=torch.int64, device=bt.device)  # [B]
    keys = torch.arange(bt.shape[1] * block_size, device=bt.device)  # [L]
    rows = torch.arange(q_max, device=bt.device)  # [Qmax]
    # absolute position of each (padded) query row; padding rows repeat the last real one
    q_pos = torch.minimum((ctx_lens - q_lens)[:, None] + rows[None, :], (ctx_lens - 1)[:, None])  # [B, Qmax]
    allowed = keys[None, None, :] <= q_pos[:, :, None]  # [B, Qmax, L]
    if window is not None:
        allowed &= keys[None, None, :] > q_pos[:, :, None] - window
    mask = torch.zeros(allowed.shape, dtype=dtype, device=bt.device).masked_fill_(~allowed, float("-inf"))
    q_valid = None if min(q_list) == q_max else rows[None, :] < q_lens[:, None]
    return AttentionGroup(start, end, bt, mask.unsqueeze(1), q_valid)


def prepare_step(
    seqs: list[Sequence], num_new_tokens: list[int], block_size: int, device: torch.device,
    dtype: torch.dtype, sliding_window: int | None,
) -> StepInputs:
    if len(seqs) != len(num_new_tokens):
        raise EngineError("execute: seqs and num_new_tokens differ in length")
    order = [i for i, n in enumerate(num_new_tokens) if n == 1] + [i for i, n in enumerate(num_new_tokens) if n != 1]
    num_decode = sum(1 for n in num_new_tokens if n == 1)
    ids: list[int] = []
    q_lens: list[int] = []
    ctx_lens: list[int] = []
    tables: list[list[int]] = []
    sample_rows: list[int] = []
    for row, i in enumerate(order):
        seq, n = seqs[i], num_new_tokens[i]
        start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
        if n < 1 or end > seq.num_tokens or len(seq.block_table) * block_size < end:
            raise EngineError(
                f"execute: sequence {seq.request_id} cannot compute tokens [{start}, {end}) "
                f"(has {seq.num_tokens} tokens, {len(seq.block_table)} blocks)"
            )
        ids.extend(seq.token_ids[start:end])
        q_lens.append(n)
        ctx_lens.append(end)
        tables.append(seq.block_table[: (end + block_size - 1) // block_size])
        if end == seq.num_tokens:
            sample_rows.append(row)
    q = torch.tensor(q_lens, dtype=torch.int64)
    ctx = torch.tensor(ctx_lens, dtype=torch.int64)
    t = len(ids)
    seq_of_token = torch.repeat_interleave(torch.arange(len(order)), q)  # [T]
    first_token = torch.cumsum(q, 0) - q  # [B] flat index of each row's first new token
    positions = (ctx - q)[seq_of_token] + torch.arange(t) - first_token[seq_of_token]  # [T]
    bt = _block_tables(tables, torch.device("cpu"))  # [B, NB]
    slots = bt[seq_of_token, positions // block_size] * block_size + positions % block_size  # [T]
    sample_idx = torch.tensor(sample_rows, dtype=torch.int64)
    logits_indices = first_token[sample_idx] + q[sample_idx] - 1  # [N]
    bt = bt.to(device)
    meta = AttentionMetadata(slot_mapping=slots.to(device))
    d = num_decode
    if d:
        meta.decode = _group(0, d, bt[:d], q_lens[:d], ctx_lens[:d], block_size, sliding_window, dtype)
    if d < len(order):
        meta.prefill = _group(d, t, bt[d:], q_lens[d:], ctx_lens[d:], block_size, sliding_window, dtype)
    return StepInputs(
        input_ids=torch.tensor(ids, dtype=torch.int64, device=device),
        positions=positions.to(device),
        meta=meta,
        order=order,
        sample_rows=sample_rows,
        logits_indices=logits_indices.to(device),
    )
