"""AsyncLLMEngine: background step thread, per-request streams, abort on cancel/close/drop,
queue bound, idle sleep, step failures surfaced (edge cases, on the paged fake runner)."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from local_engine.config import EngineConfig
from local_engine.engine.async_engine import (
    STEP_STALL_S,
    UNHEALTHY_AFTER_FAILED_STEPS,
    AsyncLLMEngine,
)
from local_engine.engine.llm_engine import LLMEngine
from local_engine.errors import (
    EngineDeadError,
    QueueFullError,
    RequestValidationError,
    StepFailedError,
)
from local_engine.sampling_params import SamplingParams
from tests.local_engine.engine_fakes import EOS, PagedFakeRunner, train_tokenizer

BS = 4


class SlowRunner(PagedFakeRunner):
    """Each step takes a little while, like a model would."""

    delay_s = 0.002
    fail = False

    def execute(self, seqs, num_new_tokens):
        if self.fail:
            raise RuntimeError("simulated device failure")
        time.sleep(self.delay_s)
        return super().execute(seqs, num_new_tokens)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer()


def build(tok, num_blocks=128, **cfg) -> LLMEngine:
    config = EngineConfig(model="/models/tiny-demo", block_size=BS, **cfg)
    runner = SlowRunner(num_blocks, BS, tok.get_vocab_size(), 512, {tok.token_to_id(EOS)})
    return LLMEngine(config, runner=runner, tokenizer=tok)


@pytest.fixture
async def engine(tok):
    eng = AsyncLLMEngine(build(tok))
    await eng.start()
    yield eng
    await eng.shutdown()


async def collect(stream) -> list:
    return [out async for out in stream]


async def test_concurrent_requests_match_offline_generation(tok, engine):
    prompts = [[1 + i, 2 + i, 3 + (i % 3)] * (1 + i % 4) for i in range(16)]
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    expected = build(tok).generate(prompts, params)
    streams = [engine.generate(f"r{i}", p, params) for i, p in enumerate(prompts)]
    results = await asyncio.gather(*(collect(s) for s in streams))
    for outs, exp in zip(results, expected, strict=True):
        assert [t for o in outs for t in o.new_token_ids] == exp
        assert outs[-1].finished and outs[-1].finish_reason == "length"
        assert sum(o.finished for o in outs) == 1
    assert engine.model_name == "tiny-demo"


async def test_cancelling_the_consumer_aborts_and_frees_blocks(engine):
    stream = engine.generate(
        "long", list(range(1, 30)), SamplingParams(max_tokens=400, ignore_eos=True)
    )
    got = []

    async def consume():
        async for out in stream:
            got.append(out)

    task = asyncio.create_task(consume())
    while len(got) < 3:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_idle(engine)
    assert not got[-1].finished
    assert engine.stats().kv_cache_usage == 0.0


async def wait_idle(engine, timeout_s=5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while engine.engine.has_unfinished() or engine._commands:
        assert time.monotonic() < deadline, "engine did not go idle"
        await asyncio.sleep(0.005)
    stats = engine.stats()
    assert stats.num_running == 0 and stats.num_waiting == 0


async def test_aclose_and_dropping_an_unread_stream_abort(engine):
    params = SamplingParams(max_tokens=400, ignore_eos=True)
    s1 = engine.generate("a", list(range(1, 9)), params)
    await anext(s1)
    await s1.aclose()
    s2 = engine.generate("b", list(range(1, 9)), params)
    del s2
    gc.collect()
    await wait_idle(engine)
    assert engine.stats().kv_cache_usage == 0.0
    assert engine.stats().generation_tokens < 400  # neither ran to completion


async def test_queue_full_is_raised_at_once(tok):
    eng = AsyncLLMEngine(build(tok, max_waiting=2, max_num_seqs=1))
    await eng.start()
    try:
        params = SamplingParams(max_tokens=50, ignore_eos=True)
        streams = [eng.generate("r0", [1, 2], params), eng.generate("r1", [1, 2], params)]
        with pytest.raises(QueueFullError):  # r0, r1 may still be queued: two waiting at most
            for i in range(2, 6):
                streams.append(eng.generate(f"r{i}", [1, 2], params))
        for s in streams:
            await s.aclose()
        await wait_idle(eng)
    finally:
        await eng.shutdown()


async def test_bad_requests_fail_before_streaming(engine):
    with pytest.raises(RequestValidationError):
        engine.generate("x", [], SamplingParams())
    with pytest.raises(RequestValidationError):
        engine.generate("y", list(range(1, 600)), SamplingParams())
    s = engine.generate("z", [1], SamplingParams(max_tokens=2))
    with pytest.raises(RequestValidationError):
        engine.generate("z", [1], SamplingParams())
    await collect(s)


async def test_idle_engine_sleeps_instead_of_stepping(engine):
    calls = 0
    step = engine.engine.step

    def counting_step():
        nonlocal calls
        calls += 1
        return step()

    engine.engine.step = counting_step
    await collect(engine.generate("a", [1, 2], SamplingParams(max_tokens=3, ignore_eos=True)))
    busy = calls
    await asyncio.sleep(0.2)
    assert calls == busy <= 5


class PoisonRunner(SlowRunner):
    """Fails every batch that holds a sequence whose prompt starts with POISON (like a request
    whose parameters break the sampler), and counts the calls."""

    POISON = 299

    def execute(self, seqs, num_new_tokens):
        if any(s.token_ids[0] == self.POISON for s in seqs):
            raise OverflowError("simulated: value cannot be converted to int64")
        return super().execute(seqs, num_new_tokens)


def build_poisoned(tok, **cfg) -> LLMEngine:
    config = EngineConfig(model="/models/tiny-demo", block_size=BS, **cfg)
    runner = PoisonRunner(128, BS, tok.get_vocab_size(), 512, {tok.token_to_id(EOS)})
    return LLMEngine(config, runner=runner, tokenizer=tok)


async def test_a_failing_request_fails_alone_and_the_engine_keeps_serving(tok):
    eng = AsyncLLMEngine(build_poisoned(tok))
    await eng.start()
    try:
        params = SamplingParams(max_tokens=12, ignore_eos=True)
        prompts = [[1 + i, 2, 3] * (1 + i % 3) for i in range(6)]
        expected = build(tok).generate(prompts, params)
        streams = [eng.generate(f"ok{i}", p, params) for i, p in enumerate(prompts)]
        poisoned = eng.generate("bad", [PoisonRunner.POISON, 5, 6], params)
        results = await asyncio.gather(*(collect(s) for s in streams))
        with pytest.raises(StepFailedError) as err:
            await collect(poisoned)
        assert isinstance(err.value.__cause__, OverflowError)
        for outs, exp in zip(results, expected, strict=True):  # batch neighbours untouched
            assert [t for o in outs for t in o.new_token_ids] == exp
        assert eng.health().ok and eng.is_running
        later = await collect(eng.generate("later", [4, 5, 6], params))
        assert later[-1].finish_reason == "length"
        await wait_idle(eng)
        assert eng.stats().kv_cache_usage == 0.0  # the failed request's blocks were freed
    finally:
        await eng.shutdown()


async def test_health_follows_failing_steps_and_recovers(tok):
    eng = AsyncLLMEngine(build(tok))
    await eng.start()
    try:
        eng.engine.runner.fail = True
        for i in range(UNHEALTHY_AFTER_FAILED_STEPS):
            with pytest.raises(StepFailedError) as err:
                await collect(eng.generate(f"a{i}", [1, 2], SamplingParams()))
            assert isinstance(err.value.__cause__, RuntimeError)
        assert not eng.health().ok and "failed" in eng.health().reason
        eng.engine.runner.fail = False  # e.g. a transient device error went away
        outs = await collect(eng.generate("b", [1, 2], SamplingParams(max_tokens=3)))
        assert outs[-1].finished and eng.health().ok
    finally:
        await eng.shutdown()


async def test_an_unattributable_step_failure_fails_those_in_flight_only(tok):
    eng = AsyncLLMEngine(build(tok))
    await eng.start()
    try:
        schedule = eng.engine.scheduler.schedule
        broken = True

        def flaky_schedule():
            if broken:
                raise RuntimeError("simulated scheduler bug")
            return schedule()

        eng.engine.scheduler.schedule = flaky_schedule
        with pytest.raises(StepFailedError):
            await collect(eng.generate("a", [1, 2], SamplingParams()))
        broken = False
        outs = await collect(eng.generate("b", [1, 2], SamplingParams(max_tokens=3)))
        assert outs[-1].finished and eng.is_running
        await wait_idle(eng)
        assert eng.stats().kv_cache_usage == 0.0
    finally:
        await eng.shutdown()


async def test_a_step_failure_it_cannot_recover_from_stops_the_engine_visibly(tok):
    eng = AsyncLLMEngine(build(tok))
    await eng.start()
    try:

        def broken(*_):
            raise RuntimeError("simulated scheduler bug")

        eng.engine.scheduler.schedule = broken
        eng.engine.fail_all = broken  # recovery fails too
        with pytest.raises(EngineDeadError) as err:
            await collect(eng.generate("a", [1, 2], SamplingParams()))
        assert isinstance(err.value.__cause__, RuntimeError)
        assert not eng.health().ok and not eng.is_running
        with pytest.raises(EngineDeadError):
            eng.generate("b", [1, 2], SamplingParams())
    finally:
        await eng.shutdown()


async def test_health_reports_a_step_that_hangs(engine):
    assert engine.health().ok
    engine._step_started = time.monotonic() - STEP_STALL_S - 1  # as if a step never returned
    assert not engine.health().ok and "step" in engine.health().reason
    engine._step_started = None
    assert engine.health().ok


async def test_health_reports_a_dead_loop(tok):
    eng = AsyncLLMEngine(build(tok))
    assert not eng.health().ok  # not started
    await eng.start()
    assert eng.health().ok
    await eng.shutdown()
    assert not eng.health().ok


async def test_shutdown_ends_open_streams(tok):
    eng = AsyncLLMEngine(build(tok))
    await eng.start()
    stream = eng.generate("a", list(range(1, 9)), SamplingParams(max_tokens=400, ignore_eos=True))
    await anext(stream)
    await eng.shutdown()
    with pytest.raises(EngineDeadError):
        async for _ in stream:
            pass


# one torch thread: the load and the step loop of an engine built by from_config


async def test_from_config_loads_and_steps_on_one_thread(tiny_model_dir, monkeypatch):
    """All torch work on one thread keeps one OpenMP team in the process (the module docstring
    says why two teams on a small CPU run the steps at about one core)."""
    import threading

    from local_engine.engine import async_engine

    seen: dict[str, set[int]] = {"load": set(), "step": set()}

    class Recording(LLMEngine):
        def __init__(self, *args, **kwargs):
            seen["load"].add(threading.get_ident())
            super().__init__(*args, **kwargs)

        def step(self):
            seen["step"].add(threading.get_ident())
            return super().step()

    monkeypatch.setattr(async_engine, "LLMEngine", Recording)
    eng = AsyncLLMEngine.from_config(
        EngineConfig(model=str(tiny_model_dir), device="cpu", dtype="float32")
    )
    await eng.start()
    try:
        outs = [o async for o in eng.generate("r1", [5, 6, 7], SamplingParams(max_tokens=3))]
        assert outs[-1].finished
        assert eng.health().ok
    finally:
        await eng.shutdown()
    assert len(seen["load"]) == 1 and seen["step"] == seen["load"]
    assert threading.get_ident() not in seen["load"]  # never the event loop's thread
    assert not eng.is_running


def test_from_config_load_error_is_raised_and_ends_its_thread(tmp_path):
    import threading

    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(Exception, match="tiny-missing|not found|No such|does not exist"):
        AsyncLLMEngine.from_config(EngineConfig(model=str(tmp_path / "tiny-missing"), device="cpu"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
        if not any(t.name == "local-engine-step" for t in extra):
            break
        time.sleep(0.01)
    else:
        pytest.fail("the load thread outlived a failed load")


async def test_start_after_shutdown_steps_again(tok):
    eng = AsyncLLMEngine(build(tok))
    for round_ in range(2):
        await eng.start()
        outs = [
            o async for o in eng.generate(f"r{round_}", [5, 6, 7], SamplingParams(max_tokens=2))
        ]
        assert outs[-1].finished
        await eng.shutdown()
        assert not eng.is_running
