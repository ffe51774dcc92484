"""Shadow evaluation end to end: the official openai SDK -> the real gateway running the
default policy with a shadow: section -> loopback mocks for the self-hosted model, the
reference and the judge. Counts requests at the mocks to prove what was (not) re-asked."""

from __future__ import annotations

import pytest

from gateway.backends.pricing import lookup_model
from tests.shadow.judge_mock import cached_judge_tokens
from tests.shadow.shadow_harness import (
    OPENAI_KEY,
    chat,
    judge_calls,
    metric,
    read_jsonl,
    reference_calls,
    shadow_stack,
    wait_for,
)

EVERYDAY = ["hi there", "say hello GOOD", "thanks a lot", "good morning GOOD friend"]


def _shadow(store: str, **over: str) -> str:
    fields = {
        "sample_rate": "1.0",
        "daily_cap_usd": "5",
        "reference": "openai",
        "judge": "openai",
        "judge_mode": "pairwise",
        "queue_size": "64",
        "workers": "2",
        "store": store,
    }
    fields.update(over)
    return "\n".join(f"  {k}: {v}" for k, v in fields.items())


def _gpt4o_cost(tokens: dict[str, int]) -> float:
    """What ``tokens`` cost on gpt-4o at litellm's map prices, cache reads at their own."""
    e = lookup_model("gpt-4o")
    assert e is not None
    p_in, p_out, p_read = (
        e["input_cost_per_token"],
        e["output_cost_per_token"],
        e["cache_read_input_token_cost"],
    )
    read = tokens.get("cached_tokens", 0)
    return (
        (tokens["prompt_tokens"] - read) * p_in
        + read * p_read
        + tokens["completion_tokens"] * p_out
    )


def test_shadow_cost_prices_cached_prompt_tokens_at_the_cache_price(tmp_path):
    """The judge mock reports half of each judge prompt read from the provider's prompt cache:
    the record says so and its cost charges them at gpt-4o's cache-read price."""
    records = tmp_path / "shadow.jsonl"
    with shadow_stack(tmp_path, _shadow(f"{{jsonl: {records}, prompts: true}}")) as s:
        headers, _ = chat(s["client"], EVERYDAY[0])
        assert headers["x-gateway-backend"] == "local"
        wait_for(lambda: len(read_jsonl(records)) == 1)
        (r,) = read_jsonl(records)
        judge = r["judge_tokens"]
        # two judge calls: each reports half its prompt cached
        assert 0 < judge["cached_tokens"] < judge["prompt_tokens"]
        calls = [b for b in s["ref"].bodies("/chat/completions") if "reply_A" in str(b)]
        words = [sum(len(str(m["content"]).split()) for m in b["messages"]) for b in calls]
        assert judge["cached_tokens"] == sum(cached_judge_tokens(w) for w in words)
        want = _gpt4o_cost(r["reference_tokens"]) + _gpt4o_cost(judge)
        full = _gpt4o_cost(r["reference_tokens"]) + _gpt4o_cost(judge | {"cached_tokens": 0})
        assert want < full
        assert r["shadow_cost_usd"] == pytest.approx(want, rel=1e-9)
        assert metric(s["base"], "gateway_shadow_spend_usd_total", backend="openai") == (
            pytest.approx(want, rel=1e-9)
        )


def test_pairwise_records_metrics_and_counts(tmp_path):
    records = tmp_path / "shadow.jsonl"
    with shadow_stack(tmp_path, _shadow(f"{{jsonl: {records}, prompts: true}}")) as s:
        local_answers = []
        for text in EVERYDAY:
            headers, resp = chat(s["client"], text)
            assert resp.choices[0].message.content == f"echo: {text}"  # the client's answer
            if headers["x-gateway-backend"] == "local":
                local_answers.append(text)
        assert local_answers, "the default policy should keep everyday prompts local"
        wait_for(lambda: len(read_jsonl(records)) == len(local_answers))
        got = {r["prompt"][0]["content"]: r for r in read_jsonl(records)}
        for text in local_answers:
            r = got[text]
            # local "echo: ... GOOD" vs reference "GOOD answer: ...": a tie; else the reference wins
            assert r["outcome"] == ("tie" if "GOOD" in text else "loss"), r
            assert r["judge_mode"] == "pairwise" and len(r["judge_raw"]) == 2
            assert r["local_backend"] == "local" and r["reference_backend"] == "openai"
            assert r["reference_answer"] == f"GOOD answer: {text}"
            assert r["shadow_cost_usd"] > 0 and r["reference_tokens"]["completion_tokens"] > 0
            assert r["rule"] == "everyday" and r["difficulty"] is not None
        # one reference call and two position-swapped judge calls per sample, no more
        assert reference_calls(s["ref"]) == len(local_answers)
        assert judge_calls(s["ref"]) == 2 * len(local_answers)
        swapped = [b["messages"][1]["content"] for b in s["ref"].bodies() if "reply_A" in str(b)]
        assert any("<reply_A>\necho:" in t for t in swapped)
        assert any("<reply_B>\necho:" in t for t in swapped)
        base = s["base"]
        assert metric(base, "gateway_shadow_samples_total", rule="everyday") == len(local_answers)
        losses = sum(1 for t in local_answers if "GOOD" not in t)
        assert metric(base, "gateway_shadow_judgements_total", outcome="loss") == losses
        assert (
            metric(base, "gateway_shadow_judgements_total", outcome="tie")
            == len(local_answers) - losses
        )
        assert metric(base, "gateway_shadow_spend_usd_total", backend="openai") > 0
        assert metric(base, "gateway_shadow_quality_threshold", virtual_model="auto") == 0.8
        assert OPENAI_KEY not in records.read_text()


def test_single_mode_grades_each_answer(tmp_path):
    records = tmp_path / "shadow.jsonl"
    shadow = _shadow(f"{{jsonl: {records}}}", judge_mode="single")
    with shadow_stack(tmp_path, shadow) as s:
        headers, _ = chat(s["client"], "hi there")
        assert headers["x-gateway-backend"] == "local"
        wait_for(lambda: len(read_jsonl(records)) == 1)
        (r,) = read_jsonl(records)
        assert (r["local_score"], r["reference_score"], r["outcome"]) == (4.0, 9.0, "loss")
        # prompts: false (the default): no text stored, a hash and the router's features
        assert r["prompt"] is None and r["local_answer"] is None and len(r["prompt_sha256"]) == 64
        assert r["features"]
        assert "hi there" not in records.read_text()
        assert metric(s["base"], "gateway_shadow_local_score_count") == 1


CONFIDENTIAL = {"x-data-classification": "confidential"}


def test_data_that_must_stay_home_is_never_reasked_or_judged_outside(tmp_path):
    records = tmp_path / "shadow.jsonl"
    with shadow_stack(tmp_path, _shadow(f"{{jsonl: {records}}}")) as s:
        s["local"].fail_next(1, status=503)  # a fault on the way: the local retry answers
        for text in ["secret plan one", "secret plan two GOOD"]:
            headers, _ = chat(s["client"], text, CONFIDENTIAL)
            assert headers["x-gateway-route-reason"] == "confidential-stays-home"
        wait_for(lambda: metric(s["base"], "gateway_shadow_dropped_total", reason="residency") == 2)
        chat(s["client"], "hi there")  # a normal request is still shadowed
        wait_for(lambda: len(read_jsonl(records)) == 1)
        bodies = s["ref"].bodies()
        assert not any("secret plan" in str(b) for b in bodies), "confidential text left home"


def test_home_judge_grades_confidential_answers_in_house(tmp_path):
    records = tmp_path / "shadow.jsonl"
    shadow = _shadow(f"{{jsonl: {records}}}", home_judge="local")
    with shadow_stack(tmp_path, shadow) as s:
        s["ref"].fail_next(3, status=500)  # the proprietary side failing must change nothing
        chat(s["client"], "secret plan three", CONFIDENTIAL)
        wait_for(lambda: len(read_jsonl(records)) == 1)
        (r,) = read_jsonl(records)
        assert r["home"] and r["judge_backend"] == "local" and r["reference_backend"] is None
        assert r["judge_mode"] == "single" and r["outcome"] is None
        assert s["ref"].bodies() == []  # the proprietary mock saw nothing at all
        judged_locally = [b for b in s["local"].bodies() if "SCORE:" in str(b)]
        assert len(judged_locally) == 1


def test_daily_cap_stops_shadow_calls(tmp_path):
    records = tmp_path / "shadow.jsonl"
    with shadow_stack(tmp_path, _shadow(f"{{jsonl: {records}}}", daily_cap_usd="0.0000001")) as s:
        for text in ["hi there", "thanks a lot"]:
            chat(s["client"], text)
        wait_for(lambda: metric(s["base"], "gateway_shadow_dropped_total", reason="cap") >= 1)
        assert reference_calls(s["ref"]) == 0 and judge_calls(s["ref"]) == 0


def test_full_queue_drops_and_counts_without_failing_requests(tmp_path):
    records = tmp_path / "shadow.jsonl"
    shadow = _shadow(f"{{jsonl: {records}}}", queue_size="1", workers="1")
    with shadow_stack(tmp_path, shadow) as s:
        s["ref"].delay_s = 2.0  # the worker is stuck on the first sample
        answers = [chat(s["client"], t) for t in ["hi there", "thanks a lot", "good night", "hey"]]
        assert all(h["x-gateway-backend"] == "local" for h, _ in answers)
        assert metric(s["base"], "gateway_shadow_dropped_total", reason="queue_full") >= 2
        s["ref"].delay_s = 0.0


def test_unparsable_verdict_keeps_the_raw_reply_and_counts(tmp_path):
    records = tmp_path / "shadow.jsonl"
    with shadow_stack(tmp_path, _shadow(f"{{jsonl: {records}}}")) as s:
        chat(s["client"], "hi UNPARSABLE")
        wait_for(lambda: len(read_jsonl(records)) == 1)
        (r,) = read_jsonl(records)
        assert r["outcome"] is None and r["error"].startswith("judge:")
        assert r["judge_raw"] == ["I cannot decide.", "I cannot decide."]
        assert metric(s["base"], "gateway_shadow_failures_total", stage="parse") == 1


def test_streamed_self_hosted_answers_are_shadowed_too(tmp_path):
    records = tmp_path / "shadow.jsonl"
    with shadow_stack(tmp_path, _shadow(f"{{jsonl: {records}, prompts: true}}")) as s:
        raw = s["client"].chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hi there"}], stream=True
        )
        assert raw.headers["x-gateway-backend"] == "local"
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        assert text == "echo: hi there"
        wait_for(lambda: len(read_jsonl(records)) == 1)
        (r,) = read_jsonl(records)
        assert r["local_answer"] == "echo: hi there" and r["outcome"] == "loss"
        assert all("stream" not in b for b in s["ref"].bodies())  # shadow calls are whole answers
