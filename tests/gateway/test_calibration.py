import math

import pytest

from gateway.routing.calibration import SpendCapController, threshold_for_share


@pytest.mark.parametrize("share", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_threshold_escalates_the_requested_share(share):
    scores = [i / 200 for i in range(200)]
    t = threshold_for_share(scores, share)
    assert sum(s > t for s in scores) == round(share * len(scores))


def test_threshold_escalates_the_highest_scores():
    scores = [0.9, 0.1, 0.5, 0.7, 0.3]
    t = threshold_for_share(scores, 0.4)
    assert sorted(s for s in scores if s > t) == [0.7, 0.9]


def test_ties_at_the_cut_escalate_together():
    t = threshold_for_share([0.2, 0.5, 0.5, 0.5, 0.9], 0.4)
    assert sum(s > t for s in [0.2, 0.5, 0.5, 0.5, 0.9]) == 4


def test_zero_share_escalates_nothing_even_at_score_one():
    assert threshold_for_share([1.0, 0.3], 0.0) >= 1.0


@pytest.mark.parametrize("share", [-0.1, 1.5, math.nan])
def test_threshold_rejects_bad_share(share):
    with pytest.raises(ValueError, match="share"):
        threshold_for_share([0.1, 0.2], share)


def test_threshold_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="at least one"):
        threshold_for_share([], 0.5)
    with pytest.raises(ValueError, match="NaN"):
        threshold_for_share([0.1, math.nan], 0.5)


def test_spend_cap_keeps_base_threshold_on_budget():
    c = SpendCapController(budget_usd=100.0, base_threshold=0.4)
    assert c.threshold(spent_usd=50.0, elapsed_fraction=0.5) == 0.4
    assert c.threshold(spent_usd=10.0, elapsed_fraction=0.5) == 0.4


def test_spend_cap_tightens_monotonically_with_overspend():
    c = SpendCapController(budget_usd=100.0, base_threshold=0.4)
    ts = [c.threshold(spent, 0.5) for spent in (55.0, 60.0, 75.0, 90.0, 99.0)]
    assert all(0.4 < a < b < 1.0 for a, b in zip(ts, ts[1:], strict=False))


def test_spend_cap_closes_when_budget_is_spent():
    c = SpendCapController(budget_usd=100.0, base_threshold=0.4, max_threshold=0.95)
    assert c.threshold(100.0, 0.3) == 0.95
    assert c.threshold(150.0, 1.0) == 0.95


def test_spend_cap_ignores_pace_very_early_in_period():
    c = SpendCapController(budget_usd=100.0, base_threshold=0.4)
    assert c.threshold(1.0, 0.001) == 0.4  # 1000x pace, but too early to extrapolate


@pytest.mark.parametrize(
    "kw",
    [
        dict(budget_usd=0, base_threshold=0.5),
        dict(budget_usd=10, base_threshold=1.2),
        dict(budget_usd=10, base_threshold=0.5, max_threshold=0.3),
        dict(budget_usd=10, base_threshold=0.5, gain=0),
    ],
)
def test_spend_cap_validates(kw):
    with pytest.raises(ValueError):
        SpendCapController(**kw)


def test_spend_cap_rejects_bad_inputs():
    c = SpendCapController(budget_usd=10, base_threshold=0.5)
    with pytest.raises(ValueError):
        c.threshold(-1.0, 0.5)
    with pytest.raises(ValueError):
        c.threshold(1.0, 1.5)
