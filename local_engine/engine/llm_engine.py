"""LLMEngine: the synchronous step loop (schedule -> run the model -> sample -> detokenize/stop).

Not thread-safe: one caller drives ``step()`` (AsyncLLMEngine's background thread, or
``generate()`` offline). Per step the work is O(batch): no pass over all tokens of a request.

A failing step is confined to the requests it belongs to: when the runner raises, the batch is
re-run in halves until the failing sequences are found; those (and a request whose output
processing raises) finish with ``finish_reason="error"`` and a ``StepFailedError``, and the
other requests of the step go on as if nothing happened.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from local_engine.config import EngineConfig
from local_engine.engine.block_manager import BlockManager
from local_engine.engine.detokenizer import Detokenizer
from local_engine.engine.outputs import EngineStats, RequestOutput
from local_engine.engine.scheduler import ScheduledBatch, Scheduler
from local_engine.engine.sequence import FinishReason, Sequence
from local_engine.errors import (
    ContextLengthError,
    EngineError,
    RequestValidationError,
    StepFailedError,
)
from local_engine.sampling_params import SamplingParams

__all__ = ["EngineStats", "LLMEngine", "RequestOutput"]

logger = logging.getLogger(__name__)


def default_model_name(model: str) -> str:
    """The name clients use when --served-model-name is not given: the file or directory name."""
    from local_engine.demo_gguf import DEMO_MODEL, DEMO_SERVED_NAME

    if model == DEMO_MODEL and not Path(model).exists():
        return DEMO_SERVED_NAME
    path = Path(model)
    return path.stem if path.suffix.lower() == ".gguf" else path.name


class Runner(Protocol):
    """What the engine needs of a ModelRunner."""

    num_kv_blocks: int
    max_model_len: int
    eos_token_ids: set[int]

    def execute(self, seqs: list[Sequence], num_new_tokens: list[int]) -> list[Any]: ...


@dataclass(slots=True)
class _Request:
    seq: Sequence
    detok: Detokenizer
    stop_ids: frozenset[int]  # stop_token_ids, plus eos unless ignore_eos


class LLMEngine:
    def __init__(
        self, config: EngineConfig, runner: Runner | None = None, tokenizer: Any = None
    ) -> None:
        if runner is None or tokenizer is None:
            # torch, gguf and the hub client are imported only when a real model is loaded
            from local_engine.checkpoint import open_checkpoint

            started = time.perf_counter()
            checkpoint = open_checkpoint(config.model)
            logger.info("loading %s", checkpoint.description)
            if runner is None:
                from local_engine.engine.model_runner import ModelRunner

                runner = ModelRunner(config, checkpoint)
            if tokenizer is None:
                tokenizer = checkpoint.tokenizer()
            logger.info("loaded in %.1f s", time.perf_counter() - started)
        self.config = config
        self.model_name = config.served_model_name or default_model_name(config.model)
        self.runner = runner
        self.tokenizer = tokenizer
        capacity = runner.num_kv_blocks * config.block_size
        limits = [runner.max_model_len, capacity] + (
            [config.max_model_len] if config.max_model_len else []
        )
        self.max_model_len = min(limits)
        if self.max_model_len < runner.max_model_len and self.max_model_len == capacity:
            logger.warning("KV cache holds %d tokens: max_model_len lowered to that", capacity)
        describe = getattr(runner, "describe", None)
        if describe is not None:
            logger.info(
                "model %s: %s; max_model_len %d, max_num_seqs %d, max_num_batched_tokens %d, "
                "prefix caching %s",
                self.model_name,
                describe(),
                self.max_model_len,
                config.max_num_seqs,
                config.max_num_batched_tokens,
                "on" if config.enable_prefix_caching else "off",
            )
        self.eos_token_ids = frozenset(runner.eos_token_ids) | frozenset(
            getattr(tokenizer, "eos_token_ids", ())
        )
        self.vocab_size: int | None = getattr(runner, "vocab_size", None) or getattr(
            tokenizer, "vocab_size", None
        )
        block_manager = BlockManager(
            runner.num_kv_blocks, config.block_size, config.enable_prefix_caching
        )
        self.scheduler = Scheduler(
            block_manager, config.max_num_seqs, config.max_num_batched_tokens, config.max_waiting
        )
        self._requests: dict[str, _Request] = {}
        self._aborted: list[RequestOutput] = []
        self._prompt_tokens = 0
        self._generation_tokens = 0
        self.consecutive_failed_steps = 0  # steps where every scheduled sequence failed

    # requests
    def validate_request(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raise RequestValidationError unless the request can be served. Reads only fixed
        settings, so the async engine may call it from the event loop thread."""
        if not isinstance(params, SamplingParams):
            raise RequestValidationError("params must be a SamplingParams")
        if not prompt_token_ids:
            raise RequestValidationError("the prompt must contain at least one token")
        if len(prompt_token_ids) >= self.max_model_len:
            raise ContextLengthError(
                f"the prompt has {len(prompt_token_ids)} tokens; this model's context is "
                f"{self.max_model_len} tokens, including at least one generated token"
            )
        if self.vocab_size is not None and (
            min(prompt_token_ids) < 0 or max(prompt_token_ids) >= self.vocab_size
        ):
            raise RequestValidationError(f"prompt token ids must be in [0, {self.vocab_size})")
        if self.vocab_size is not None:
            for name, ids in (
                ("stop_token_ids", params.stop_token_ids),
                ("logit_bias", params.logit_bias),
            ):
                if any(not 0 <= i < self.vocab_size for i in ids):
                    raise RequestValidationError(
                        f"{name}: token ids must be in [0, {self.vocab_size})"
                    )

    def add_request(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> None:
        """Queue a request. Raises RequestValidationError or QueueFullError."""
        if request_id in self._requests:
            raise RequestValidationError(f"request id {request_id!r} is already in use")
        self.validate_request(prompt_token_ids, params)
        seq = Sequence(prompt_token_ids, params, self.config.block_size, request_id)
        stop_ids = frozenset(params.stop_token_ids)
        if not params.ignore_eos:
            stop_ids |= self.eos_token_ids
        detok = Detokenizer(self.tokenizer, prompt_token_ids, params.stop)
        self.scheduler.add(seq)  # may raise QueueFullError; last, so a failure leaves no trace
        self._requests[request_id] = _Request(seq, detok, stop_ids)

    def abort_request(self, request_id: str) -> None:
        """Drop a request and free its blocks; the next ``step()`` reports it finished ("abort")."""
        req = self._requests.pop(request_id, None)
        if req is None:
            return
        self.scheduler.finish(req.seq, FinishReason.ABORT)
        seq = req.seq
        self._aborted.append(
            RequestOutput(
                request_id,
                [],
                "",
                True,
                FinishReason.ABORT.value,
                seq.num_prompt_tokens,
                seq.num_completion_tokens,
                seq.num_cached_tokens,
            )
        )

    def has_unfinished(self) -> bool:
        return bool(self._requests) or bool(self._aborted)

    # step
    def step(self) -> list[RequestOutput]:
        """Run one step. Failures of single requests come back as outputs with an ``error``;
        this raises only if the engine's own bookkeeping fails (then call ``fail_all``)."""
        outputs, self._aborted = self._aborted, []
        batch = self.scheduler.schedule()
        if not batch.seqs:
            return outputs
        samples, failures = self._execute(batch.seqs, batch.num_new_tokens)
        done, done_samples = ScheduledBatch(), []
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.num_new_tokens, strict=True)):
            if i in failures:
                outputs.append(self._fail(seq, failures[i]))
            else:
                done.seqs.append(seq)
                done.num_new_tokens.append(n)
                done_samples.append(samples[i])
        self.consecutive_failed_steps = 0 if done.seqs else self.consecutive_failed_steps + 1
        self.scheduler.postprocess(done)
        for seq, sample in zip(done.seqs, done_samples, strict=True):
            if sample is None:
                continue
            try:
                outputs.append(self._on_sample(self._requests[seq.request_id], sample))
            except Exception as exc:  # confined to this request, logged and reported to it
                logger.exception("output processing failed for request %s", seq.request_id)
                outputs.append(self._fail(seq, exc))
        return outputs

    def _execute(
        self, seqs: list[Sequence], num_new_tokens: list[int]
    ) -> tuple[list[Any], dict[int, Exception]]:
        """Run the batch; on failure re-run halves to find the failing rows (K/V writes are
        idempotent, so recomputing a sequence's new tokens is safe). -> (samples, {row: error})."""
        try:
            return self.runner.execute(seqs, num_new_tokens), {}
        except Exception as exc:  # attributed below and reported to the requests it hit
            if len(seqs) == 1:
                logger.error("step failed for request %s", seqs[0].request_id, exc_info=exc)
                return [None], {0: exc}
            logger.warning("a step of %d sequences failed (%r): isolating", len(seqs), exc)
        mid = len(seqs) // 2
        left, left_failed = self._execute(seqs[:mid], num_new_tokens[:mid])
        right, right_failed = self._execute(seqs[mid:], num_new_tokens[mid:])
        return left + right, left_failed | {mid + i: e for i, e in right_failed.items()}

    def _fail(self, seq: Sequence, cause: BaseException) -> RequestOutput:
        """Finish a request with finish_reason "error", freeing its blocks (in any state)."""
        request_id = seq.request_id
        self._requests.pop(request_id, None)
        self.scheduler.finish(seq, FinishReason.ERROR)
        error = StepFailedError("the engine failed while generating this request (logged)")
        error.__cause__ = cause
        return RequestOutput(
            request_id,
            [],
            "",
            True,
            FinishReason.ERROR.value,
            seq.num_prompt_tokens,
            seq.num_completion_tokens,
            seq.num_cached_tokens,
            error=error,
        )

    def fail_all(self, cause: BaseException) -> list[RequestOutput]:
        """Fail every live request (after a step failed in a way no request can be blamed for)."""
        outputs, self._aborted = self._aborted, []
        outputs += [self._fail(req.seq, cause) for req in list(self._requests.values())]
        for seq in [*self.scheduler.running, *self.scheduler.waiting]:  # none, unless a bug
            self.scheduler.finish(seq, FinishReason.ERROR)
        self.consecutive_failed_steps += 1
        return outputs

    def _on_sample(self, req: _Request, sample: Any) -> RequestOutput:
        seq, params = req.seq, req.seq.sampling_params
        token_id = sample.token_id
        seq.append_token(token_id)
        self._generation_tokens += 1
        if seq.num_completion_tokens == 1:
            self._prompt_tokens += seq.num_prompt_tokens
        reason: FinishReason | None = None
        if token_id in req.stop_ids:
            reason = FinishReason.STOP  # the stop token's own text is not part of the output
        elif req.detok.add_token(token_id):
            reason = FinishReason.STOP
        if reason is None and (
            seq.num_completion_tokens >= params.max_tokens or seq.num_tokens >= self.max_model_len
        ):
            reason = FinishReason.LENGTH
        if reason is not None:
            self.scheduler.finish(seq, reason)
            del self._requests[seq.request_id]
            req.detok.flush()
        logprobs = None
        if params.logprobs:
            logprobs = [
                {
                    "token_id": token_id,
                    "logprob": sample.logprob,
                    "top_logprobs": sample.top_logprobs or [],
                }
            ]
        return RequestOutput(
            seq.request_id,
            [token_id],
            req.detok.release(final=reason is not None),
            reason is not None,
            reason.value if reason is not None else None,
            seq.num_prompt_tokens,
            seq.num_completion_tokens,
            seq.num_cached_tokens,
            logprobs,
        )

    # offline helper
    def generate(
        self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]
    ) -> list[list[int]]:
        """Run prompts to completion; returns each one's generated token ids, in order."""
        per_prompt = params if isinstance(params, list) else [params] * len(prompts)
        if len(per_prompt) != len(prompts):
            raise ValueError("one SamplingParams per prompt, or a single one for all")
        if self.scheduler.max_waiting < 1:
            raise EngineError("max_waiting is 0: the engine admits no requests")
        ids = [f"generate-{id(self)}-{i}" for i in range(len(prompts))]
        results: dict[str, list[int]] = {rid: [] for rid in ids}
        pending = list(zip(ids, prompts, per_prompt, strict=True))[::-1]
        while pending or self.has_unfinished():
            while pending and len(self.scheduler.waiting) < self.scheduler.max_waiting:
                self.add_request(*pending.pop())
            for out in self.step():
                if out.error is not None:
                    raise out.error
                if out.request_id in results:
                    results[out.request_id].extend(out.new_token_ids)
        return [results[rid] for rid in ids]

    def stats(self) -> EngineStats:
        sched, bm = self.scheduler, self.scheduler.block_manager
        return EngineStats(
            num_running=len(sched.running),
            num_waiting=len(sched.waiting),
            kv_cache_usage=bm.usage,
            prefix_cache_queries=bm.prefix_cache_queries,
            prefix_cache_hits=bm.prefix_cache_hits,
            num_preemptions=sched.num_preemptions,
            prompt_tokens=self._prompt_tokens,
            generation_tokens=self._generation_tokens,
        )
