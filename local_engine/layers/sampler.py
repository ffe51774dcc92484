"""Batched token sampling: logit bias, penalties, temperature, top-k, top-p, min-p, per-request seeds, logprobs.

One ``SamplingBatch`` is built per step for the rows that sample; every transform runs on the
whole ``[N, V]`` logits tensor at once, and a transform is skipped when no row uses it. When
every row is greedy with no penalties, sampling is one ``argmax``.

Random rows draw with the exponential-race trick (``argmax(p / E)``, ``E ~ Exp(1)``), which
samples exactly from ``p`` and lets each seeded row take its noise from its own generator,
seeded from ``(seed, position)`` so a request's draws do not depend on its batch neighbours,
on preemption or on earlier steps. Unseeded rows share the runner's generator.

Semantics follow vLLM/OpenAI: presence and frequency penalties count generated tokens,
repetition penalty covers prompt and generated tokens; logprobs are ``log_softmax`` of the
raw logits (before penalties and temperature).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from local_engine.sampling_params import SamplingParams

_SEED_MIX = 0x9E3779B97F4A7C15  # golden-ratio multiplier: spreads (seed, position) over 64 bits
_MASK64 = (1 << 64) - 1
_TINY = 1e-20  # floor for exponential noise so p / E never divides by zero


@dataclass(slots=True)
class Penalties:
    presence: torch.Tensor  # [N, 1]
    frequency: torch.Tensor  # [N, 1]
    repetition: torch.Tensor  # [N, 1]
    prompt_ids: torch.Tensor  # [N, P] padded with V (an out-of-range column, dropped)
    output_ids: torch.Tensor  # [N, O] padded with V


@dataclass(slots=True)
class SamplingBatch:
    params: list[SamplingParams]
    positions: list[int]  # index of the token being sampled, per row (seeds mix it in)
    all_greedy: bool
    temperature: torch.Tensor | None = None  # [N, 1]; 1.0 for greedy rows (they take argmax anyway)
    greedy_rows: torch.Tensor | None = None  # [N] bool
    top_k: torch.Tensor | None = None  # [N] int64, V when off
    top_p: torch.Tensor | None = None  # [N]
    min_p: torch.Tensor | None = None  # [N]
    penalties: Penalties | None = None
    logit_bias: torch.Tensor | None = None  # [N, V], added to the raw logits first


def _pad(rows: list[list[int]], pad: int, device: torch.device) -> torch.Tensor:
    width = max(1, max(len(r) for r in rows))
    return torch.tensor(
        [r + [pad] * (width - len(r)) for r in rows], dtype=torch.int64, device=device
    )


def build_sampling_batch(
    params: list[SamplingParams],
    positions: list[int],
    histories: list[tuple[list[int], list[int]]] | None,
    vocab_size: int,
    device: torch.device,
) -> SamplingBatch:
    """``histories`` (prompt ids, generated ids) per row: required when any row has a penalty."""
    greedy = [p.temperature == 0.0 for p in params]
    has_pen = histories is not None
    has_bias = any(p.logit_bias for p in params)
    batch = SamplingBatch(params, positions, all(greedy) and not has_pen and not has_bias)
    if histories is not None:

        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor([[v] for v in values], dtype=torch.float32, device=device)

        batch.penalties = Penalties(
            column([p.presence_penalty for p in params]),
            column([p.frequency_penalty for p in params]),
            column([p.repetition_penalty for p in params]),
            _pad([h[0] for h in histories], vocab_size, device),
            _pad([h[1] for h in histories], vocab_size, device),
        )
    if has_bias:
        batch.logit_bias = _bias(params, vocab_size, device)
    if all(greedy):
        return batch
    batch.greedy_rows = torch.tensor(greedy, dtype=torch.bool, device=device)
    batch.temperature = torch.tensor(
        [[p.temperature or 1.0] for p in params], dtype=torch.float32, device=device
    )
    if any(p.top_k != -1 for p in params):
        batch.top_k = torch.tensor(
            [min(p.top_k, vocab_size) if p.top_k != -1 else vocab_size for p in params],
            dtype=torch.int64,
            device=device,
        )
    if any(p.top_p < 1.0 for p in params):
        batch.top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32, device=device)
    if any(p.min_p > 0.0 for p in params):
        batch.min_p = torch.tensor([p.min_p for p in params], dtype=torch.float32, device=device)
    return batch


def _bias(params: list[SamplingParams], vocab_size: int, device: torch.device) -> torch.Tensor:
    # [N, V]; ids outside the vocabulary were rejected at admission, and are skipped here anyway
    rows, cols, vals = [], [], []
    for row, p in enumerate(params):
        for token_id, value in p.logit_bias.items():
            if 0 <= token_id < vocab_size:
                rows.append(row)
                cols.append(token_id)
                vals.append(value)
    bias = torch.zeros(len(params), vocab_size, dtype=torch.float32, device=device)
    if vals:
        index = (torch.tensor(rows, device=device), torch.tensor(cols, device=device))
        bias[index] = torch.tensor(vals, dtype=torch.float32, device=device)
    return bias


def _counts(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    # ids: [N, L] padded with V -> counts: [N, V]
    counts = torch.zeros(ids.shape[0], vocab_size + 1, dtype=torch.float32, device=ids.device)
    counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float32))
    return counts[:, :vocab_size]


def apply_penalties(logits: torch.Tensor, p: Penalties) -> torch.Tensor:
    # logits: [N, V] fp32
    vocab = logits.shape[1]
    out_counts = _counts(p.output_ids, vocab)
    seen = (out_counts + _counts(p.prompt_ids, vocab)) > 0
    scaled = torch.where(logits > 0, logits / p.repetition, logits * p.repetition)
    logits = torch.where(seen, scaled, logits)
    return logits - p.frequency * out_counts - p.presence * (out_counts > 0).float()


def _top_k_top_p(
    logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None
) -> torch.Tensor:
    # logits: [N, V]; one descending sort serves both filters
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    if top_k is not None:
        kth = sorted_logits.gather(
            1, (top_k - 1).clamp(max=logits.shape[1] - 1).unsqueeze(1)
        )  # [N, 1]
        sorted_logits = sorted_logits.masked_fill(sorted_logits < kth, float("-inf"))
    if top_p is not None:
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass strictly before it already reaches top_p (the first is kept)
        drop = (probs.cumsum(-1) - probs) >= top_p.unsqueeze(1)
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)


def _min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    probs = logits.softmax(-1)
    threshold = probs.amax(-1, keepdim=True) * min_p.unsqueeze(1)
    return logits.masked_fill(probs < threshold, float("-inf"))


def _noise(
    b: SamplingBatch,
    shape: tuple[int, int],
    device: torch.device,
    gen: torch.Generator,
    seed_gen: torch.Generator,
) -> torch.Tensor:
    # noise: [N, V] ~ Exp(1); seeded rows from their own (seed, position) stream
    noise = torch.empty(shape, dtype=torch.float32, device=device).exponential_(generator=gen)
    for row, (p, pos) in enumerate(zip(b.params, b.positions, strict=True)):
        if p.seed is not None and p.temperature != 0.0:
            seed_gen.manual_seed(((p.seed * _SEED_MIX) + pos) & _MASK64)
            noise[row].exponential_(generator=seed_gen)
    return noise.clamp_min_(_TINY)


def sample(
    logits: torch.Tensor, b: SamplingBatch, gen: torch.Generator, seed_gen: torch.Generator
) -> torch.Tensor:
    """logits: [N, V] fp32 raw -> token ids [N] int64."""
    if b.logit_bias is not None:
        logits = logits + b.logit_bias
    if b.penalties is not None:
        logits = apply_penalties(logits, b.penalties)
    if b.all_greedy or b.greedy_rows is None or b.temperature is None:
        return logits.argmax(-1)
    greedy_ids = logits.argmax(-1)
    logits = logits / b.temperature
    if b.top_k is not None or b.top_p is not None:
        logits = _top_k_top_p(logits, b.top_k, b.top_p)
    if b.min_p is not None:
        logits = _min_p(logits, b.min_p)
    probs = logits.softmax(-1)
    noise = _noise(b, (probs.shape[0], probs.shape[1]), probs.device, gen, seed_gen)
    sampled = (probs / noise).argmax(-1)
    return torch.where(b.greedy_rows, greedy_ids, sampled)


def compute_logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, num_top: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits: [N, V] raw; token_ids: [N] -> (chosen [N], top values [N, k], top ids [N, k])."""
    logprobs = logits.log_softmax(-1)
    chosen = logprobs.gather(1, token_ids.unsqueeze(1)).squeeze(1)
    top_vals, top_ids = (
        logprobs.topk(num_top, dim=-1) if num_top else (logprobs[:, :0], token_ids[:, None][:, :0])
    )
    return chosen, top_vals, top_ids
