"""Cascade confidence from token log-probs, and its calibration from judged records."""

from __future__ import annotations

import math

import pytest

from gateway.cascade.calibrate import calibrate_threshold
from gateway.cascade.confidence import answer_confidence, low_quantile_mean, token_logprobs
from tests.shadow.records_factory import record


def chat_answer(lps):
    return {"choices": [{"logprobs": {"content": [{"token": "x", "logprob": v} for v in lps]}}]}


def test_low_quantile_mean():
    values = [-0.1, -0.2, -3.0, -0.05, -1.0, -0.3, -0.2, -0.1, -0.1, -0.1]
    assert low_quantile_mean(values, 0.1) == -3.0  # one token: the least likely
    assert low_quantile_mean(values, 0.2) == pytest.approx(-2.0)
    assert low_quantile_mean(values, 1.0) == pytest.approx(sum(values) / 10)


def test_both_openai_shapes_and_missing():
    assert token_logprobs(chat_answer([-0.5, -1.5])) == [-0.5, -1.5]
    legacy = {"choices": [{"logprobs": {"token_logprobs": [-0.25, None, -2.0]}}]}
    assert token_logprobs(legacy) == [-0.25, -2.0]
    assert token_logprobs({"choices": [{"logprobs": None}]}) is None
    assert token_logprobs({"choices": []}) is None
    assert answer_confidence(chat_answer([]), 0.1) is None
    assert answer_confidence(chat_answer([-math.inf, -1.0]), 1.0) == -1.0


def test_calibration_separates_losses_from_wins():
    recs = [record(f"w{i}", "win", confidence=-0.2 - i * 0.01) for i in range(5)]
    recs += [record(f"l{i}", "loss", confidence=-2.0 - i * 0.1) for i in range(3)]
    recs += [record("odd", "loss", confidence=-0.1)]  # a confident loss: cannot be caught
    cal = calibrate_threshold(recs)
    assert -2.0 < cal.threshold < -0.24
    assert (cal.losses, cal.losses_caught, cal.others_escalated) == (4, 3, 0)
    assert cal.j == pytest.approx(0.75)


def test_calibration_needs_confidences_and_both_outcomes():
    with pytest.raises(ValueError, match="observe_only"):
        calibrate_threshold([record("a", "win")])
    with pytest.raises(ValueError, match="both"):
        calibrate_threshold([record("a", "win", confidence=-1.0)])
