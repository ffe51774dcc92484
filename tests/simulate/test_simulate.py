"""simulate(): routing shares, costs checked by hand, data rules, rate, curve and spend cap."""

from __future__ import annotations

import pytest

from gateway.errors import PolicyError
from gateway.routing.heuristic import HeuristicScorer
from gateway.simulate import simulate
from gateway.simulate.replay import DEFAULT_COMPLETION_TOKENS
from tests.simulate.sim_helpers import EASY, HARD, IMAGE, chat

LOCAL = (1e-7, 1e-6)  # USD per prompt / completion token
OPENAI = (2e-6, 8e-6)
T0 = 1746057600  # 2025-05-01T00:00:00Z


def line(content, *, p=100, c=50, ts=None, label=None, headers=None, **body):
    out = {"request": chat(content, **body), "usage": {"prompt_tokens": p, "completion_tokens": c}}
    if ts is not None:
        out["timestamp"] = ts
    if label is not None:
        out["label"] = label
    if headers:
        out["headers"] = headers
    return out


def run(policy_file, log_file, lines, cap="", **kw):
    return simulate(policy_file(cap), log_file(lines), env={}, **kw)


def test_heuristic_separates_the_test_prompts():
    s = HeuristicScorer()
    assert (
        s.score([{"role": "user", "content": HARD}])
        >= 0.5
        > s.score([{"role": "user", "content": EASY}])
    )


def test_costs_and_shares_by_hand(policy_file, log_file):
    rep = run(
        policy_file,
        log_file,
        [line(EASY, p=1000, c=500), line(HARD, p=200, c=100), line(IMAGE, p=300, c=10)],
    )
    local = 1000 * LOCAL[0] + 500 * LOCAL[1]
    gpt = 200 * OPENAI[0] + 100 * OPENAI[1] + 300 * OPENAI[0] + 10 * OPENAI[1]
    base = (1000 + 200 + 300) * OPENAI[0] + (500 + 100 + 10) * OPENAI[1]
    assert rep.cost_usd == pytest.approx(local + gpt)
    assert rep.baseline_usd == pytest.approx(base)
    assert rep.savings_usd == pytest.approx(base - local - gpt)
    backends = {g.name: g for g in rep.by_backend}
    assert (backends["local"].requests, backends["openai"].requests) == (1, 2)
    assert backends["local"].tokens == 1500 and backends["openai"].tokens == 610
    assert backends["openai"].token_share == pytest.approx(610 / 2110)
    assert {g.name: g.requests for g in rep.by_rule} == {"everyday": 1, "hard": 1, "vision": 1}
    assert rep.proprietary_request_share == pytest.approx(2 / 3)
    assert rep.tokens_from_log_share == 1.0


def test_cache_reads_and_writes_in_the_log_are_priced_as_serve_prices_them(policy_file, log_file):
    """The log's cached / cache-written prompt tokens cost the cache prices of the backend the
    request goes to and of the reference model (savings baseline); a self-hosted backend
    without cache prices charges them as prompt tokens."""
    easy = line(EASY, p=1000, c=500)
    easy["usage"]["prompt_tokens_details"] = {"cached_tokens": 600}
    hard = line(HARD, p=200, c=100)
    hard["usage"] |= {
        "prompt_tokens_details": {"cached_tokens": 120},
        "cache_creation_input_tokens": 50,
    }
    rep = run(policy_file, log_file, [easy, hard])
    local = 1000 * LOCAL[0] + 500 * LOCAL[1]
    gpt = 30 * OPENAI[0] + 120 * 0.5e-6 + 50 * OPENAI[0] + 100 * OPENAI[1]
    base = (400 + 30) * 2e-6 + (600 + 120) * 0.5e-6 + 50 * 2.5e-6 + (500 + 100) * 8e-6
    assert rep.cost_usd == pytest.approx(local + gpt)
    assert gpt < 200 * OPENAI[0] + 100 * OPENAI[1]  # what pricing every prompt token fully gave
    assert rep.baseline_usd == pytest.approx(base)
    assert rep.savings_usd == pytest.approx(base - local - gpt)
    assert {g.name: g.requests for g in rep.by_rule} == {"everyday": 1, "hard": 1}


def test_totals_add_up(policy_file, log_file):
    lines = [
        line(
            EASY if i % 3 else HARD,
            p=10 + i,
            c=i,
            headers={"x-data-classification": "confidential"} if i % 5 == 0 else None,
        )
        for i in range(40)
    ]
    rep = run(policy_file, log_file, lines)
    for groups in (rep.by_backend, rep.by_rule):
        assert sum(g.requests for g in groups) == rep.routed == 40
        assert sum(g.request_share for g in groups) == pytest.approx(1.0)
        assert sum(g.token_share for g in groups) == pytest.approx(1.0)
        assert sum(g.cost_usd for g in groups) == pytest.approx(rep.cost_usd)
        assert sum(g.baseline_usd for g in groups) == pytest.approx(rep.baseline_usd)


def test_confidential_never_counted_on_proprietary(policy_file, log_file):
    secret = {"x-data-classification": "confidential"}
    rep = run(
        policy_file,
        log_file,
        [
            line(HARD, headers=secret),
            line(EASY, headers=secret),
            line("x" * 40_000, headers=secret),
            line(IMAGE, headers=secret),
        ],
    )
    assert [g.name for g in rep.by_backend] == ["local"]
    assert rep.proprietary_request_share == 0.0
    # the image and the over-long document cannot stay home: reported, not sent elsewhere
    assert rep.routed == 2 and rep.error_count == 2
    assert all("must stay on self-hosted" in why for _, why in rep.errors)
    assert rep.cost_usd == pytest.approx(2 * (100 * LOCAL[0] + 50 * LOCAL[1]))


def test_estimates_without_usage(policy_file, log_file):
    rep = run(policy_file, log_file, [chat(EASY), chat(EASY, max_tokens=20)])
    (g,) = rep.by_backend
    assert g.completion_tokens == DEFAULT_COMPLETION_TOKENS + 20
    assert g.prompt_tokens > 0
    assert rep.tokens_from_log_share == 0.0
    assert any("estimated as min(max_tokens" in n for n in rep.notes)


def test_monthly_rate_from_timestamps(policy_file, log_file):
    # 5 requests, one every hour: 4 gaps over 4 h -> 24 requests/day
    rep = run(policy_file, log_file, [line(EASY, ts=T0 + 3600 * i) for i in range(5)])
    assert rep.rate.requests_per_day == pytest.approx(24.0)
    assert rep.per_month(rep.savings_usd) == pytest.approx(rep.savings_usd / 5 * 24 * 30)
    no_ts = run(policy_file, log_file, [line(EASY)])
    assert no_ts.rate.requests_per_day is None and no_ts.per_month(1.0) is None
    assert "no timestamps" in no_ts.rate.source
    assumed = run(policy_file, log_file, [line(EASY)], requests_per_day=1000)
    assert assumed.per_month(assumed.cost_usd) == pytest.approx(assumed.cost_usd * 1000 * 30)


def test_backends_disabled_by_env_count_as_enabled_unless_told(policy_file, log_file):
    lines = [line(HARD)]
    on = run(policy_file, log_file, lines)
    assert [g.name for g in on.by_backend] == ["openai"]
    assert any("openai" in n and "treated as enabled" in n for n in on.notes)
    off = run(policy_file, log_file, lines, all_backends=False)
    # as serve would answer: the unconfigured rule falls back to the self-hosted backend
    assert off.routed == 1 and [g.name for g in off.by_backend] == ["local"]


def test_model_override_and_unknown_models(policy_file, log_file):
    body = {"request": {**chat(EASY), "model": "gpt-4o"}}
    rep = run(policy_file, log_file, [body])
    assert rep.routed == 0 and "unknown model 'gpt-4o'" in rep.errors[0][1]
    assert run(policy_file, log_file, [body], model="auto").routed == 1
    with pytest.raises(ValueError, match="not defined"):
        run(policy_file, log_file, [body], model="nope")
    with pytest.raises(PolicyError):
        simulate(log_file([body]), log_file([body], "l2.jsonl"), env={})


def test_curve_over_thresholds(policy_file, log_file):
    need, fine = {"strong_needed": 1}, {"strong_needed": 0}
    rep = run(
        policy_file,
        log_file,
        [line(HARD, label=need), line(EASY, label=fine), line(IMAGE, label=fine), line(EASY)],
    )
    c = rep.curve
    assert c is not None and c.requests == 3  # the unlabelled request is left out
    assert (c.weak_quality, c.strong_quality) == (pytest.approx(2 / 3), 1.0)
    by_t = {p.threshold: p for p in c.points}
    assert by_t[0.0].escalated_share == 1.0 and by_t[0.0].quality == 1.0  # everything escalates
    assert by_t[1.0].escalated_share == pytest.approx(1 / 3)  # only the image (vision rule)
    assert by_t[1.0].quality == pytest.approx(2 / 3)
    # the policy (threshold 0.5): HARD escalates, EASY stays: perfect quality at 2/3 escalated
    assert c.operating.escalated_share == pytest.approx(2 / 3) and c.operating.quality == 1.0
    op, at = c.operating, by_t[0.5]
    assert (op.cost_usd, op.quality, op.escalated_share) == (
        pytest.approx(at.cost_usd),
        at.quality,
        at.escalated_share,
    )
    assert (
        c.cheapest_at_target is not None
        and c.cheapest_at_target.escalated_share == pytest.approx(2 / 3)
    )
    costs = [p.cost_usd for p in c.points]
    assert costs == sorted(costs, reverse=True)  # a higher threshold never costs more here
    assert run(policy_file, log_file, [line(EASY)]).curve is None


def test_threshold_override(policy_file, log_file):
    rep = run(policy_file, log_file, [line(EASY), line(HARD)], threshold=0.0)
    assert rep.proprietary_request_share == 1.0
    with pytest.raises(ValueError, match="threshold"):
        run(policy_file, log_file, [line(EASY)], threshold=1.5)


def test_spend_cap_raises_the_threshold_over_the_day(policy_file, log_file):
    # 20 hard requests early in the day, each $0.0016 on openai; a $0.005/day cap allows ~3
    lines = [line(HARD, ts=T0 + 3600 + 60 * i) for i in range(20)]
    free = run(policy_file, log_file, lines)
    capped = run(policy_file, log_file, lines, cap=", spend_cap_usd: 0.005, spend_cap_period: day")
    assert free.proprietary_request_share == 1.0
    prop = {g.name: g for g in capped.by_backend}["openai"]
    assert 0 < prop.requests < 20
    assert (
        prop.cost_usd <= 0.005 + 200 * OPENAI[0] + 50 * OPENAI[1]
    )  # at most one request over the cap
    assert any(
        f"raised the threshold for {20 - prop.requests:,} requests" in n for n in capped.notes
    )
