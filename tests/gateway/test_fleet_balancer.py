"""The fleet balancer and the load parser: pure Python, a fake clock."""

from __future__ import annotations

import pytest

from gateway.backends.fleet import (
    FleetBalancer,
    MetricsFormatError,
    ReplicaLoad,
    conversation_text,
    parse_load,
    prefix_key,
)
from gateway.config.fleet import FleetConfig

URLS = [f"http://10.0.0.{i}:8000/v1" for i in range(1, 5)]


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def balancer(**fleet) -> FleetBalancer:
    b = FleetBalancer(FleetConfig(endpoints=URLS, **fleet), clock=Clock())
    b.set_members(URLS)
    return b


def test_least_load_counts_own_requests_and_what_the_replica_reports():
    b = balancer(prefix_affinity={"enabled": False})
    r = b.replicas
    r[URLS[0]].outstanding = 3
    r[URLS[1]].outstanding = 1
    r[URLS[2]].outstanding = 1
    r[URLS[3]].outstanding = 0
    b.observe(URLS[3], ReplicaLoad(running=4, waiting=2))  # others put 6 there
    assert b.choose(None).replica.key in (URLS[1], URLS[2])
    r[URLS[1]].outstanding = 2
    assert b.choose(None).replica.key == URLS[2]
    # our own requests at scrape time are not counted twice
    b.observe(URLS[0], ReplicaLoad(running=3))
    assert r[URLS[0]].external == 0 and r[URLS[0]].score == 3


def test_round_robin_takes_turns():
    b = balancer(balance="round_robin")
    picks = [b.choose(prefix_key("same conversation", 100)).replica.key for _ in range(8)]
    assert set(picks) == set(URLS) and picks[:4] == picks[4:]


def test_affinity_keeps_a_conversation_home_and_spreads_conversations():
    b = balancer()
    keys = [prefix_key(f"system: you help\nuser: question {i}", 2048) for i in range(200)]
    homes = [b.choose(k).replica.key for k in keys]
    assert [b.choose(k).replica.key for k in keys] == homes  # same key, same replica
    counts = {u: homes.count(u) for u in URLS}
    assert min(counts.values()) > 20, counts  # 64 virtual nodes each: roughly even


def test_affinity_moves_on_when_home_is_over_the_bound():
    b = balancer(prefix_affinity={"load_factor": 1.25})
    key = prefix_key("a long conversation", 2048)
    home = b.choose(key)
    assert home.affinity == "home"
    home.replica.outstanding = 10  # bound: ceil(1.25 * 11 / 4) = 4
    moved = b.choose(key)
    assert moved.affinity == "moved" and moved.replica is not home.replica
    for r in b.replicas.values():  # all busy, home a little more: under the bound, back home
        r.outstanding = 2
    home.replica.outstanding = 3  # bound: ceil(1.25 * 10 / 4) = 4
    assert b.choose(key).replica is home.replica


def test_consistent_hashing_moves_few_keys_when_a_replica_joins():
    b = FleetBalancer(FleetConfig(endpoints=URLS[:3]), clock=Clock())
    b.set_members(URLS[:3])
    keys = [prefix_key(f"conversation {i}", 64) for i in range(400)]
    before = [b.choose(k).replica.key for k in keys]
    added, removed = b.set_members(URLS)
    assert added == [URLS[3]] and removed == []
    after = [b.choose(k).replica.key for k in keys]
    moved = [(x, y) for x, y in zip(before, after, strict=True) if x != y]
    assert all(y == URLS[3] for _, y in moved)  # only to the newcomer
    assert 40 < len(moved) < 180, len(moved)  # about a quarter


def test_open_circuit_and_failed_scrape_take_a_replica_out():
    b = balancer(prefix_affinity={"enabled": False})
    for _ in range(2):
        b.replicas[URLS[0]].breaker.record_failure()
    b.observe(URLS[1], None)
    keys = {b.choose(None, exclude={URLS[2]}).replica.key for _ in range(5)}
    assert keys == {URLS[3]}
    assert b.choose(None, exclude={URLS[2], URLS[3]}) is not None  # scrape-failed, still tried
    assert b.choose(None, exclude={URLS[2], URLS[3]}).replica.key == URLS[1]
    assert b.choose(None, exclude={URLS[1], URLS[2], URLS[3]}) is None  # only the open one left
    b.clock.t += 5.0  # cooldown: half-open, tried again
    assert b.choose(None, exclude={URLS[1], URLS[2], URLS[3]}).replica.key == URLS[0]


def test_saturation_prefers_unsaturated_replicas_then_reports_all_full():
    b = balancer(spill_over={"max_waiting": 4, "max_kv_cache_usage": 0.9})
    for u in URLS[:3]:
        b.observe(u, ReplicaLoad(waiting=5))
    c = b.choose(prefix_key("x" * 100, 64))
    assert c.replica.key == URLS[3] and not c.saturated
    b.observe(URLS[3], ReplicaLoad(waiting=0, kv_cache_usage=0.95))
    assert b.choose(None).saturated
    b.observe(URLS[3], ReplicaLoad(waiting=4, kv_cache_usage=0.5))  # at, not past, the queue bound
    assert not b.choose(None).saturated


def test_max_outstanding_saturates_without_scrapes():
    b = balancer(metrics_path=None, spill_over={"max_outstanding": 2})
    for r in b.replicas.values():
        r.outstanding = 2
    assert b.choose(None).saturated


def test_conversation_text_is_the_leading_text():
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]},
        ]
    }
    assert conversation_text(body) == "system:be brief\nuser:hi\n"
    assert conversation_text({"prompt": "once upon"}) == "once upon"
    later = [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]
    longer = {"messages": [*body["messages"], *later]}
    assert conversation_text(longer) == conversation_text(body)  # later turns keep the key


def test_parse_load_sums_models_and_reads_both_kv_names():
    text = "\n".join(
        [
            "# HELP vllm:num_requests_running Running",
            'vllm:num_requests_running{model_name="a"} 2.0',
            'vllm:num_requests_running{model_name="b"} 1.0',
            'vllm:num_requests_waiting{model_name="a"} 5.0 1700000000000',
            'vllm:gpu_cache_usage_perc{model_name="a"} 0.25',
            'vllm:kv_cache_usage_perc{model_name="b"} 0.5',
            "local_engine_num_requests_waiting 99",
        ]
    )
    load = parse_load(text, at=1.0)
    assert (load.running, load.waiting, load.kv_cache_usage, load.at) == (3.0, 5.0, 0.5, 1.0)
    with pytest.raises(MetricsFormatError):
        parse_load("process_cpu_seconds_total 3\n", at=0)
    with pytest.raises(MetricsFormatError):
        parse_load("vllm:num_requests_waiting{} many\n", at=0)


def test_fleet_config_checks():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs endpoints, dns"):
        FleetConfig()
    with pytest.raises(ValidationError, match="not an http"):
        FleetConfig(endpoints=["10.0.0.1:8000"])
    with pytest.raises(ValidationError, match="needs metrics_path"):
        FleetConfig(endpoints=URLS, metrics_path=None, spill_over={"max_waiting": 3})
    cfg = FleetConfig.model_validate(
        {"endpoints": ["os.environ/REPLICAS"]},
        context={"env": {"REPLICAS": "http://a:1/v1, http://b:1/v1"}},
    )
    assert cfg.endpoints == ["http://a:1/v1", "http://b:1/v1"]
