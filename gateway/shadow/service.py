"""The shadow service: sampling on the request path, a bounded queue, background workers.

Request path (``ticket`` before the call, ``submit`` after the client has its answer): a
dict lookup, one random draw, and for a sampled answer one ``put_nowait``; when the queue is
full the sample is dropped and counted, never awaited. Workers (started on the first sample)
reserve the day's cap, run ``evaluate``, update metrics and write the record.

Started lazily from the first policy that samples; the store, queue size and worker count
are read then, so changing them needs a restart (sampling settings reload with the policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.backends.base import Usage
from gateway.config.schema import Policy
from gateway.config.shadow import ShadowPolicy, ShadowSampling
from gateway.routing.decide import Decision
from gateway.routing.features import RequestFeatures
from gateway.runtime import Runtime
from gateway.shadow.cap import ShadowCap
from gateway.shadow.errors import ShadowStoreError
from gateway.shadow.evaluate import ShadowJob, StageError, answer_text, estimate_cost, evaluate
from gateway.shadow.metrics import ShadowMetrics
from gateway.shadow.records import ShadowRecord
from gateway.shadow.residency import shadow_targets
from gateway.shadow.sampling import effective_sampling, selected
from gateway.shadow.store import RecordStore, build_store
from gateway.state.base import SharedState

log = logging.getLogger("gateway.shadow")

__all__ = ["ShadowService"]


class ShadowService:
    def __init__(
        self,
        state: SharedState,
        metrics: ShadowMetrics,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self._rand = rand
        self._clock = clock
        self._plans_of: tuple[int, dict[str, ShadowSampling]] = (0, {})
        self._on: _Running | None = None  # set by the first sample
        self.on_record: Callable[[ShadowRecord], Any] | None = None  # tests, logs

    # ------------------------------------------------------------ request path

    def _plans(self, policy: Policy) -> dict[str, ShadowSampling]:
        key, plans = self._plans_of
        if key != id(policy):
            plans = effective_sampling(policy)
            self._plans_of = (id(policy), plans)
            self.metrics.set_thresholds({m: s.min_quality_kept for m, s in plans.items()})
        return plans

    def ticket(self, rt: Runtime, f: RequestFeatures, decision: Decision) -> ShadowSampling | None:
        """The sampling settings if this request is sampled (decided before the call)."""
        if rt.policy.shadow is None:
            return None
        s = self._plans(rt.policy).get(f.virtual_model)
        if s is None or not selected(s, f, decision, self._rand):
            return None
        return s

    def submit(
        self,
        sampling: ShadowSampling,
        rt: Runtime,
        f: RequestFeatures,
        decision: Decision,
        body: dict[str, Any],
        backend: str,
        answer: bytes | dict[str, Any],
        usage: Usage | None,
        confidence: float | None = None,
    ) -> bool:
        """Queue a sampled answer (only self-hosted ones are evaluated); never blocks."""
        if not rt.configs[backend].self_hosted:
            return False
        targets = shadow_targets(sampling, f, decision, rt.views())
        if targets.judge is None:
            self.metrics.record_drop("residency")
            return False
        cfg = rt.policy.shadow
        if cfg is None:  # reloaded without a shadow section since ticket()
            return False
        on = self._ensure_started(cfg, rt.policy.ledger.database_url)
        job = ShadowJob(
            sampling=sampling,
            targets=targets,
            backends=rt.backends,
            pricing=rt.pricing,
            body=body,
            local_backend=backend,
            local_answer=answer_text(answer),
            local_usage=usage or Usage(f.prompt_tokens, 0),
            time=self._clock(),
            team=f.team,
            key_name=f.key_name,
            virtual_model=f.virtual_model,
            rule=decision.reason,
            difficulty=f.difficulty,
            confidence=confidence,
            store_prompts=on.config.store.prompts,
        )
        try:
            on.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.record_drop("queue_full")
            return False
        self.metrics.record_sample(f.virtual_model, decision.reason)
        self.metrics.queue_depth.set(on.queue.qsize())
        return True

    # ------------------------------------------------------------ workers

    def _ensure_started(self, cfg: ShadowPolicy, ledger_url: str | None) -> _Running:
        on = self._on
        if on is not None:
            if cfg.store != on.config.store or cfg.queue_size != on.config.queue_size:
                log.debug("shadow store/queue settings changed: they apply after a restart")
            on.cap.cap_usd = cfg.daily_cap_usd  # the cap reloads with the policy
            return on
        store = build_store(cfg.store, ledger_url)
        if store is None:
            log.warning("shadow: no store configured (shadow.store); records go to metrics only")
        on = self._on = _Running(
            config=cfg,
            queue=asyncio.Queue(maxsize=cfg.queue_size),
            cap=ShadowCap(self.state, cfg.daily_cap_usd),
            store=store,
            store_ready=asyncio.ensure_future(store.open()) if store is not None else None,
        )
        on.workers = [asyncio.ensure_future(self._work(on)) for _ in range(cfg.workers)]
        return on

    async def _work(self, on: _Running) -> None:
        while True:
            job = await on.queue.get()
            try:
                await self._run(on, job)
            finally:
                on.queue.task_done()
                self.metrics.queue_depth.set(on.queue.qsize())

    async def _run(self, on: _Running, job: ShadowJob) -> None:
        estimate = estimate_cost(job)
        if not await on.cap.reserve(estimate):
            self.metrics.record_drop("cap")
            return
        spent: dict[str, float] = {}
        try:
            async with asyncio.timeout(on.config.timeout_s):
                record = await evaluate(job, spent)
        except StageError as exc:
            log.warning("shadow sample failed: %s", exc)
            self.metrics.record_failure(exc.stage)
            return
        except TimeoutError:
            log.warning("shadow sample took longer than shadow.timeout_s")
            self.metrics.record_failure("timeout")
            return
        finally:
            actual = sum(spent.values())
            for backend, usd in spent.items():
                self.metrics.record_spend(backend, usd)
            await on.cap.settle(estimate, actual)
        if not job.store_prompts and not record.features:
            record.features = _features(job.body.get("messages") or [])
        self._observe(record)
        await self._write(on, record)

    def _observe(self, record: ShadowRecord) -> None:
        m = self.metrics
        if record.error is not None:
            m.record_failure("parse")
        if record.outcome is not None:
            m.record_judgement(record.virtual_model, record.rule, record.difficulty, record.outcome)
        if record.judge_mode == "single" and record.local_score is not None:
            m.record_local_score(record.virtual_model, record.rule, record.local_score)

    async def _write(self, on: _Running, record: ShadowRecord) -> None:
        if self.on_record is not None:
            self.on_record(record)
        if on.store is None or on.store_ready is None:
            return
        try:
            await on.store_ready
            await on.store.write(record)
        except ShadowStoreError as exc:
            log.error("shadow record not stored: %s", exc)
            self.metrics.record_failure("store")

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued sample is done (tests, graceful shutdown)."""
        if self._on is not None:
            async with asyncio.timeout(timeout_s):
                await self._on.queue.join()

    async def close(self) -> None:
        on, self._on = self._on, None
        if on is None:
            return
        for task in on.workers:
            task.cancel()
        for task in on.workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _ in range(on.queue.qsize()):
            self.metrics.record_drop("shutdown")
        if on.store is not None:
            if on.store_ready is not None:
                with contextlib.suppress(ShadowStoreError):
                    await on.store_ready
            await on.store.close()


@dataclass(slots=True)
class _Running:
    """What the first sample starts: settings read then, the queue, cap, store, workers."""

    config: ShadowPolicy
    queue: asyncio.Queue[ShadowJob]
    cap: ShadowCap
    store: RecordStore | None
    store_ready: asyncio.Future[None] | None
    workers: list[asyncio.Task[None]] = field(default_factory=list)


def _features(messages: list[dict[str, Any]]) -> dict[str, float]:
    from gateway.router.shadow_labels import prompt_features

    return prompt_features(messages)
