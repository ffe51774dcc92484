"""Test doubles for engine edge-case tests (never for the model-equivalence tests).

``PagedFakeRunner`` keeps a real paged "KV cache" (the token and position written to each slot)
and derives every next token from what it reads back through the block table, so any paging,
prefix-cache or preemption bug changes the generated tokens (and trips its consistency check).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from local_engine.engine.sequence import Sequence

CORPUS = ["hello world, the END of the story. STOP here! more text follows, café 🙂"] * 30
EOS = "<eos>"


def train_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=[EOS],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


@dataclass
class FakeSample:
    token_id: int
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None


class PagedFakeRunner:
    def __init__(
        self,
        num_kv_blocks: int,
        block_size: int,
        vocab_size: int,
        max_model_len: int = 512,
        eos_token_ids: set[int] | None = None,
        scripts: dict[str, list[int]] | None = None,
    ) -> None:
        self.num_kv_blocks = num_kv_blocks
        self.block_size = block_size
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.eos_token_ids = eos_token_ids or set()
        self.scripts = scripts or {}
        self.cache: list[list[tuple[int, int] | None]] = [
            [None] * block_size for _ in range(num_kv_blocks)
        ]
        self.batches: list[list[int]] = []  # num_new_tokens of every call

    def _slot(self, seq: Sequence, pos: int) -> tuple[int, int]:
        return seq.block_table[pos // self.block_size], pos % self.block_size

    def execute(self, seqs: list[Sequence], num_new_tokens: list[int]) -> list[FakeSample | None]:
        self.batches.append(list(num_new_tokens))
        for seq, n in zip(
            seqs, num_new_tokens, strict=True
        ):  # write K/V first, like the real runner
            start = seq.num_computed_tokens
            assert 0 < n and start + n <= seq.num_tokens
            assert len(seq.block_table) * self.block_size >= start + n
            for pos in range(start, start + n):
                block, off = self._slot(seq, pos)
                self.cache[block][off] = (seq.token_ids[pos], pos)
        return [self._sample(seq, n) for seq, n in zip(seqs, num_new_tokens, strict=True)]

    def _sample(self, seq: Sequence, n: int) -> FakeSample | None:
        end = seq.num_computed_tokens + n
        if end < seq.num_tokens:
            return None
        context = [self.cache[b][o] for b, o in (self._slot(seq, p) for p in range(end))]
        assert context == [(t, p) for p, t in enumerate(seq.token_ids)], (
            "KV cache holds wrong tokens"
        )
        script = self.scripts.get(seq.request_id)
        if script is not None:
            return FakeSample(
                script[min(seq.num_completion_tokens, len(script) - 1)], -0.5, [(1, -0.5)]
            )
        h = sum((tok + 1) * (pos + 7) for tok, pos in context)  # depends on every cached slot
        return FakeSample(1 + h % (self.vocab_size - 1), -1.0, [(2, -1.0)])
