"""AsyncLLMEngine: one background thread steps the LLMEngine while there is work.

The event loop never runs the model. ``generate()`` validates on the loop (so a bad request or a
full queue fails at once), then hands the request to the step thread through an ordered command
queue; the thread sleeps on a condition when idle. Each step's outputs go back to the loop in one
``call_soon_threadsafe`` and are fanned out to per-request asyncio queues. Closing or cancelling a
request's iterator (client disconnect), or dropping it unread, aborts the request and frees its
KV blocks.

Every torch call of an engine built by ``from_config`` runs on that one thread: the model load
and then the step loop (``_TorchThread``). PyTorch's CPU ops run on one OpenMP team per calling
thread, and GNU OpenMP (the runtime in PyTorch's CPU wheels) cuts its workers' spin-wait from
300,000 to 100 iterations once the process has more OpenMP threads than CPUs: a model loaded
on the main thread and stepped on another left two teams, so on 2 cores each op's worker went to
sleep and was woken again, and the steps ran on ~1.1 cores instead of ~1.7.

A step that fails for some requests fails those (``StepFailedError``) and the loop goes on; one
that fails in a way no request can be blamed for fails the requests in flight and goes on. Only
a failure to recover from that stops the loop (``EngineDeadError``). ``health()`` says whether
the engine can serve: the loop is alive, steps are not all failing, and none is stuck.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from queue import SimpleQueue
from typing import Any, TypeVar

from local_engine.config import EngineConfig
from local_engine.engine.llm_engine import LLMEngine
from local_engine.engine.outputs import EngineStats, RequestOutput
from local_engine.errors import (
    EngineDeadError,
    EngineError,
    QueueFullError,
    RequestValidationError,
    StepFailedError,
)
from local_engine.sampling_params import SamplingParams

__all__ = ["AsyncLLMEngine", "EngineHealth", "RequestStream"]

logger = logging.getLogger(__name__)

UNHEALTHY_AFTER_FAILED_STEPS = 3  # consecutive steps in which every request failed
STEP_STALL_S = 120.0  # a step running longer than this means the device hangs

T = TypeVar("T")


@dataclass(slots=True, frozen=True)
class _Add:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams


@dataclass(slots=True, frozen=True)
class _Abort:
    request_id: str


@dataclass(slots=True, frozen=True)
class EngineHealth:
    ok: bool
    reason: str = ""  # why not, when not ok


class _TorchThread:
    """A daemon thread that runs the callables handed to it, one at a time, in order: the
    engine's load and then its step loop share it (see the module docstring for why)."""

    def __init__(self, name: str) -> None:
        self._inbox: SimpleQueue[tuple[Callable[[], Any], Future] | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._inbox.put((fn, future))
        return future

    def close(self) -> None:
        """The thread ends after what it was given."""
        self._inbox.put(None)

    def join(self) -> None:
        self._thread.join()

    def _serve(self) -> None:
        while (item := self._inbox.get()) is not None:
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)


def _log_loop_crash(running: Future[None]) -> None:
    if not running.cancelled() and (exc := running.exception()) is not None:
        logger.error("the engine loop crashed; the engine stops", exc_info=exc)


class RequestStream:
    """Async iterator over one request's outputs; ends after the ``finished`` one."""

    def __init__(self, engine: AsyncLLMEngine, request_id: str, queue: asyncio.Queue) -> None:
        self.request_id = request_id
        self._engine = engine
        self._queue = queue
        self._done = False
        self._finalizer = weakref.finalize(self, engine._abort, request_id)  # dropped unread

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self._done:
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            await self.aclose()
            raise
        if isinstance(item, BaseException):
            self._end()
            raise item
        if item.finished:
            self._end()
        return item

    def _end(self) -> None:
        self._done = True
        self._finalizer.detach()
        self._engine._queues.pop(self.request_id, None)

    async def aclose(self) -> None:
        """Abort the request unless it already finished."""
        if not self._done:
            self._done = True
            self._finalizer()  # runs engine._abort once


class AsyncLLMEngine:
    def __init__(self, engine: LLMEngine, *, torch_thread: _TorchThread | None = None) -> None:
        self.engine = engine
        self.config = engine.config
        self.tokenizer = engine.tokenizer
        self.max_model_len = engine.max_model_len
        self.model_name: str = engine.model_name
        self._cv = threading.Condition()
        self._commands: deque[_Add | _Abort] = deque()  # guarded by _cv
        self._num_pending_adds = 0  # guarded by _cv
        self._stopping = False
        # the thread the engine was built on (from_config), else the one start() makes
        self._thread: _TorchThread | None = torch_thread
        self._running: Future[None] | None = None  # the step loop on self._thread: started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[str, asyncio.Queue] = {}  # event-loop side
        self._error: BaseException | None = None
        self._step_started: float | None = None  # monotonic start of the running step

    @classmethod
    def from_config(cls, config: EngineConfig) -> AsyncLLMEngine:
        """Load the model on the thread that will step it (blocks until loaded)."""
        thread = _TorchThread("local-engine-step")
        try:
            engine = thread.submit(lambda: LLMEngine(config)).result()
        except BaseException:
            thread.close()
            raise
        return cls(engine, torch_thread=thread)

    # lifecycle
    async def start(self) -> None:
        if self._running is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        if self._thread is None:
            self._thread = _TorchThread("local-engine-step")
        self._running = self._thread.submit(self._run)
        self._running.add_done_callback(_log_loop_crash)

    async def shutdown(self) -> None:
        thread = self._thread
        if thread is None:
            return
        with self._cv:
            self._stopping = True
            self._cv.notify()
        thread.close()
        await asyncio.to_thread(thread.join)
        self._thread = self._running = None
        self._fail_all(EngineDeadError("the engine was shut down"))

    @property
    def is_running(self) -> bool:
        running = self._running
        return running is not None and not running.done() and self._error is None

    def health(self) -> EngineHealth:
        if not self.is_running:
            return EngineHealth(False, "the engine loop is not running")
        if self.engine.consecutive_failed_steps >= UNHEALTHY_AFTER_FAILED_STEPS:
            return EngineHealth(False, "the last engine steps all failed")
        started = self._step_started
        if started is not None and time.monotonic() - started > STEP_STALL_S:
            return EngineHealth(False, f"an engine step has run for over {STEP_STALL_S:g} s")
        return EngineHealth(True)

    # requests
    def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> RequestStream:
        """Admit a request; iterate the returned stream for its outputs. Raises at once:
        RequestValidationError, QueueFullError, EngineDeadError."""
        if self._error is not None:
            raise EngineDeadError("the engine stopped after an error") from self._error
        if self._running is None:
            raise EngineError("the engine is not started")
        if request_id in self._queues:
            raise RequestValidationError(f"request id {request_id!r} is already in use")
        self.engine.validate_request(prompt_token_ids, params)
        queue: asyncio.Queue = asyncio.Queue()
        with self._cv:
            waiting = len(self.engine.scheduler.waiting) + self._num_pending_adds
            if waiting >= self.config.max_waiting:
                raise QueueFullError(f"waiting queue is full ({self.config.max_waiting} requests)")
            self._num_pending_adds += 1
            self._commands.append(_Add(request_id, list(prompt_token_ids), params))
            self._cv.notify()
        self._queues[request_id] = queue
        return RequestStream(self, request_id, queue)

    def _abort(self, request_id: str) -> None:
        # called on the loop, or by a finalizer on any thread: dict.pop and the locked append are safe
        self._queues.pop(request_id, None)
        with self._cv:
            self._commands.append(_Abort(request_id))
            self._cv.notify()

    def stats(self) -> EngineStats:
        stats = self.engine.stats()
        if self._num_pending_adds:  # admitted here, not yet handed to the scheduler
            stats = replace(stats, num_waiting=stats.num_waiting + self._num_pending_adds)
        return stats

    # step thread
    def _run(self) -> None:
        engine = self.engine
        while True:
            with self._cv:
                while not (self._commands or self._stopping or engine.has_unfinished()):
                    self._cv.wait()
                if self._stopping:
                    return
                commands, self._commands = self._commands, deque()
            rejected: list[tuple[str, EngineError]] = []
            self._step_started = time.monotonic()
            try:
                rejected = self._apply(commands)
                outputs = engine.step() if engine.has_unfinished() else []
            except Exception as exc:  # no request to blame: fail those in flight, keep serving
                logger.exception("engine step failed; failing the requests in flight")
                try:
                    outputs = engine.fail_all(exc)
                except Exception as fatal:  # the engine's state is beyond repair: stop
                    logger.exception("could not recover from a failed step; the engine stops")
                    self._error = fatal
                    self._post(self._fail_all, EngineDeadError("the engine stopped"), fatal)
                    return
            finally:
                self._step_started = None
            if outputs or rejected:
                self._post(self._deliver, outputs, rejected)

    def _apply(self, commands: deque[_Add | _Abort]) -> list[tuple[str, EngineError]]:
        rejected: list[tuple[str, EngineError]] = []
        for cmd in commands:
            if isinstance(cmd, _Add):
                with self._cv:
                    self._num_pending_adds -= 1
                try:
                    self.engine.add_request(cmd.request_id, cmd.prompt_token_ids, cmd.params)
                except EngineError as exc:  # lost a race for the queue, or a reused id
                    rejected.append((cmd.request_id, exc))
                except Exception as exc:  # a bug, but this request's alone: fail it, go on
                    logger.exception("admitting request %s failed", cmd.request_id)
                    error = StepFailedError("the engine failed to admit this request (logged)")
                    error.__cause__ = exc
                    rejected.append((cmd.request_id, error))
            else:
                self.engine.abort_request(cmd.request_id)
        return rejected

    def _post(self, callback, *args) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    # event-loop side
    def _deliver(
        self, outputs: list[RequestOutput], rejected: list[tuple[str, EngineError]]
    ) -> None:
        queues = self._queues
        for out in outputs:
            queue = queues.get(out.request_id)
            if queue is not None:
                queue.put_nowait(out if out.error is None else out.error)
        for request_id, exc in rejected:
            queue = queues.get(request_id)
            if queue is not None:
                queue.put_nowait(exc)

    def _fail_all(self, error: EngineError, cause: BaseException | None = None) -> None:
        if cause is not None:
            error.__cause__ = cause
        for queue in self._queues.values():
            queue.put_nowait(error)
        self._queues.clear()
