import threading

import pytest

from gateway.router.errors import RouterModelError
from gateway.router.scorer import LearnedScorer
from gateway.routing.scorer import DifficultyScorer

from .conftest import EASY, HARD


def _m(t):
    return [{"role": "user", "content": t}]


@pytest.fixture(scope="module")
def scorer():
    return LearnedScorer.load()


def test_builtin_scorer_meets_the_contract(scorer):
    assert isinstance(scorer, DifficultyScorer) and scorer.name == "learned"
    scores = scorer.score_batch([_m(t) for t in EASY + HARD])
    assert all(0.0 <= s <= 1.0 for s in scores)
    single = [scorer.score(_m(t)) for t in EASY + HARD]
    assert single == pytest.approx(scores, abs=1e-6)


def test_repeated_prompts_come_from_the_cache(scorer):
    msgs = _m("How many ways can 8 rooks be placed on a chessboard so none attack each other?")
    first = scorer.score(msgs)
    scorer.model, model = None, scorer.model  # a cache hit must not touch the model
    try:
        assert scorer.score(msgs) == first
    finally:
        scorer.model = model


def test_load_raises_on_an_unusable_artefact(tmp_path):
    with pytest.raises(RouterModelError):
        LearnedScorer.load(tmp_path / "missing")


def test_concurrent_scoring_is_consistent(scorer):
    prompts = [_m(f"Compute {i} * {i + 3} and explain") for i in range(40)]
    expected = scorer.score_batch(prompts)
    got: dict[int, float] = {}

    def work(lo):
        for i in range(lo, 40, 4):
            got[i] = scorer.score(prompts[i])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(40)] == pytest.approx(expected, abs=1e-6)
