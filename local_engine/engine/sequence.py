"""A request's token stream and its place in the paged KV cache (plain Python, no torch).

Contract shared by the scheduler, the block manager and the model runner:
- ``token_ids`` holds prompt then generated tokens.
- ``num_computed_tokens`` counts leading tokens whose K/V are already in the cache
  (prefix-cache hits included). A step computes ``token_ids[num_computed_tokens:
  num_computed_tokens + n]`` for the ``n`` the scheduler chose (a prefill chunk, or 1 to decode).
- ``block_table[i]`` is the physical block holding tokens ``[i*block_size, (i+1)*block_size)``.
- Preemption by recompute resets ``num_computed_tokens`` to 0 and frees the blocks; the
  generated tokens are kept and recomputed as part of the prompt on resumption.
"""

from __future__ import annotations

from enum import Enum, StrEnum, auto
from itertools import count

from local_engine.sampling_params import SamplingParams


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


class FinishReason(StrEnum):
    STOP = "stop"  # eos, stop token id or stop string
    LENGTH = "length"  # max_tokens or max_model_len
    ABORT = "abort"  # client went away / cancelled
    ERROR = "error"  # the step failed for this request (RequestOutput.error says why)


_ids = count()


class Sequence:
    def __init__(
        self,
        token_ids: list[int],
        sampling_params: SamplingParams,
        block_size: int,
        request_id: str | None = None,
    ) -> None:
        if not token_ids:
            raise ValueError("a sequence needs at least one prompt token")
        self.seq_id = next(_ids)
        self.request_id = request_id if request_id is not None else str(self.seq_id)
        self.token_ids = list(token_ids)
        self.num_prompt_tokens = len(token_ids)
        self.sampling_params = sampling_params
        self.block_size = block_size
        self.status = SequenceStatus.WAITING
        self.finish_reason: FinishReason | None = None
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0  # prefix-cache hits at the last allocation
        self.block_table: list[int] = []
        # prefix cache (block manager): chain hashes of full blocks, computed once each, and how
        # many leading blocks have been published to the cache since the last (re)allocation
        self.block_hashes: list[bytes] = []
        self.num_published_blocks = 0
        self.arrival_step = 0  # set by the scheduler, for FCFS order and preemption choice

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_completion_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def completion_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def last_token(self) -> int:
        return self.token_ids[-1]

    @property
    def num_blocks(self) -> int:
        return (len(self.token_ids) + self.block_size - 1) // self.block_size

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def block(self, i: int) -> list[int]:
        return self.token_ids[i * self.block_size : (i + 1) * self.block_size]

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)
