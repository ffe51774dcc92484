import numpy as np
import pytest

from gateway.router.metrics import routing_curve


@pytest.fixture
def outcomes():
    rng = np.random.default_rng(1)
    weak = rng.integers(0, 2, 500).astype(float)
    strong = np.maximum(weak, rng.integers(0, 2, 500)).astype(float)
    return weak, strong


def test_constant_scores_route_like_random(outcomes):
    c = routing_curve(np.zeros(500), *outcomes)
    assert c.apgr() == pytest.approx(0.5, abs=1e-9)
    assert c.cpt(0.5) == pytest.approx(0.5, abs=0.002)
    np.testing.assert_allclose(c.pgr, c.shares, atol=1e-9)


def test_oracle_reaches_full_gain_at_the_share_of_gains(outcomes):
    weak, strong = outcomes
    gain = strong - weak
    c = routing_curve(gain, weak, strong)
    assert c.cpt(1.0) == pytest.approx(gain.mean())
    assert c.pgr[-1] == pytest.approx(1.0)
    assert c.apgr() > 0.75


def test_reversed_oracle_is_worse_than_random(outcomes):
    weak, strong = outcomes
    assert routing_curve(weak - strong, weak, strong).apgr() < 0.3


def test_hand_computed_curve():
    weak, strong = [0, 0, 1, 0], [1, 0, 1, 1]  # gains 1, 0, 0, 1
    c = routing_curve([0.9, 0.8, 0.1, 0.7], weak, strong)
    np.testing.assert_allclose(c.pgr, [0, 0.5, 0.5, 1.0, 1.0])
    assert c.cpt(0.5) == 0.25 and c.cpt(0.8) == 0.75
    assert c.quality_share(weak=0.25, strong=0.75, share=0.25) == pytest.approx(0.5 / 0.75)


def test_undefined_when_strong_is_not_better():
    with pytest.raises(ValueError, match="not better"):
        routing_curve([0.1, 0.2], [1, 1], [1, 0])
    with pytest.raises(ValueError, match="equal length"):
        routing_curve([0.1], [1, 1], [1, 0])
