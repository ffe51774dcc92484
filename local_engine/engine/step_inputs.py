"""Per-step model inputs for a mixed batch of prefill chunks and decodes, rebuilt every step.

Python touches each sequence once (its new token ids and its block table); positions, cache
slots and the decode masks are then computed with a handful of vectorised tensor ops. Flat
token order is decodes first (longest context first), then prefill chunks; ``order`` maps rows
back to the caller's sequence order. On the SDPA path the decodes are cut into groups of
similar context length, each one padded SDPA call: padding every row to the longest context
in the batch made the K/V gather and attention read about twice the tokens they needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from local_engine.engine.sequence import Sequence
from local_engine.errors import EngineError
from local_engine.layers.attention import AttentionGroup, AttentionMetadata, PrefillChunk


@dataclass(slots=True)
class StepInputs:
    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    meta: AttentionMetadata
    order: list[int]  # row r of this step is seqs[order[r]]
    sample_rows: list[int]  # rows (in step order) whose computation reaches the end of the sequence
    logits_indices: torch.Tensor  # [N] flat index of the last token of each sampling row


# a decode group is cut where a row's context is at most half the group's longest and the cut
# saves at least this many padded tokens per row (one more SDPA call costs about that much)
GROUP_MIN_SAVING_TOKENS = 128


def decode_group_bounds(ctx_desc: list[int]) -> list[tuple[int, int]]:
    """[start, end) row ranges of ``ctx_desc`` (context lengths, longest first) to attend together."""
    bounds: list[tuple[int, int]] = []
    start = 0
    for i, ctx in enumerate(ctx_desc):
        longest = ctx_desc[start]
        if 2 * ctx <= longest and longest - ctx >= GROUP_MIN_SAVING_TOKENS:
            bounds.append((start, i))
            start = i
    bounds.append((start, len(ctx_desc)))
    return bounds


def _block_tables(tables: list[list[int]], device: torch.device) -> torch.Tensor:
    width = max(len(t) for t in tables)
    return torch.tensor(
        [t + [0] * (width - len(t)) for t in tables], dtype=torch.int64, device=device
    )


def _decode_group(
    start: int,
    bt: torch.Tensor,
    ctx_list: list[int],
    block_size: int,
    window: int | None,
    dtype: torch.dtype,
    kernel: bool,
) -> AttentionGroup:
    # bt: [B, NB] covering every row's context; ctx_list: B context lengths (new token included)
    bt = bt[:, : (max(ctx_list) + block_size - 1) // block_size]
    end = start + len(ctx_list)
    if kernel:  # the kernel masks by length itself
        return AttentionGroup(
            start, end, bt, None, torch.tensor(ctx_list, dtype=torch.int32).to(bt.device)
        )
    ctx_lens = torch.tensor(ctx_list, dtype=torch.int64, device=bt.device)  # [B]
    keys = torch.arange(bt.shape[1] * block_size, device=bt.device)  # [L]
    q_pos = (ctx_lens - 1)[:, None]  # [B, 1] the new token's position
    allowed = keys[None, :] <= q_pos  # [B, L]
    if window is not None:
        allowed &= keys[None, :] > q_pos - window
    mask = torch.zeros(allowed.shape, dtype=dtype, device=bt.device).masked_fill_(
        ~allowed, float("-inf")
    )
    return AttentionGroup(start, end, bt, mask[:, None, None, :])


def _chunk(
    start: int,
    end: int,
    table: list[int],
    q: int,
    ctx: int,
    window: int | None,
    device: torch.device,
) -> PrefillChunk:
    """A prefill chunk of ``q`` tokens ending at context length ``ctx``, flat tokens [start, end)."""
    if q == ctx and (window is None or ctx <= window):
        return PrefillChunk(start, end, None, None)
    keys = torch.arange(ctx, device=device)  # [ctx]
    q_pos = torch.arange(ctx - q, ctx, device=device)  # [q]
    allowed = keys[None, :] <= q_pos[:, None]  # [q, ctx]
    if window is not None:
        allowed &= keys[None, :] > q_pos[:, None] - window
    bt = None if q == ctx else torch.tensor(table, dtype=torch.int64, device=device)
    return PrefillChunk(start, end, bt, allowed)


def prepare_step(
    seqs: list[Sequence],
    num_new_tokens: list[int],
    block_size: int,
    device: torch.device,
    dtype: torch.dtype,
    sliding_window: int | None,
    decode_kernel: bool = False,
) -> StepInputs:
    if len(seqs) != len(num_new_tokens):
        raise EngineError("execute: seqs and num_new_tokens differ in length")
    decodes = sorted(
        (i for i, n in enumerate(num_new_tokens) if n == 1),
        key=lambda i: -seqs[i].num_computed_tokens,
    )
    order = decodes + [i for i, n in enumerate(num_new_tokens) if n != 1]
    num_decode = len(decodes)
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
    meta = AttentionMetadata(slot_mapping=slots.to(device), sliding_window=sliding_window)
    d = num_decode
    if d:
        bounds = [(0, d)] if decode_kernel else decode_group_bounds(ctx_lens[:d])
        meta.decode = [
            _decode_group(
                a, bt[a:b], ctx_lens[a:b], block_size, sliding_window, dtype, decode_kernel
            )
            for a, b in bounds
        ]
    if d < len(order):
        first = first_token.tolist()
        meta.prefill = [
            _chunk(
                first[r],
                first[r] + q_lens[r],
                tables[r],
                q_lens[r],
                ctx_lens[r],
                sliding_window,
                device,
            )
            for r in range(d, len(order))
        ]
    return StepInputs(
        input_ids=torch.tensor(ids, dtype=torch.int64, device=device),
        positions=positions.to(device),
        meta=meta,
        order=order,
        sample_rows=sample_rows,
        logits_indices=logits_indices.to(device),
    )
