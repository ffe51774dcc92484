import json
import threading

import pytest

from gateway.router.scorer import LearnedScorer
from gateway.routing.heuristic import HeuristicScorer
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
    assert scorer.failures == 0


def test_shipped_router_ranks_hard_requests_above_easy_ones(scorer):
    easy = [scorer.score(_m(t)) for t in EASY]
    hard = [scorer.score(_m(t)) for t in HARD]
    assert min(hard) > max(easy)


def test_repeated_prompts_come_from_the_cache(scorer):
    msgs = _m("How many ways can 8 rooks be placed on a chessboard so none attack each other?")
    first = scorer.score(msgs)
    scorer.model, model = None, scorer.model  # a cache hit must not touch the model
    try:
        assert scorer.score(msgs) == first
    finally:
        scorer.model = model


def test_unusable_artifact_falls_back_to_heuristic_and_counts(tmp_path):
    (tmp_path / "router.json").write_text(json.dumps({"format": "nope"}))
    s = LearnedScorer.load(tmp_path)
    assert s.model is None and "not a gateway router" in s.load_error
    h = HeuristicScorer()
    assert s.score(_m("Prove it.")) == h.score(_m("Prove it."))
    assert s.score_batch([_m("a"), _m("b")]) == h.score_batch([_m("a"), _m("b")])
    assert s.failures == 3


def test_strict_load_raises(tmp_path):
    from gateway.router.errors import RouterModelError

    with pytest.raises(RouterModelError):
        LearnedScorer.load(tmp_path / "missing", strict=True)


def test_runtime_failure_of_the_learned_path_is_counted_not_raised(tmp_path):
    from gateway.router import artifact
    from gateway.router.embedding import MiniLMEncoder

    model = artifact.load(None)
    s = LearnedScorer(model)
    model._anchors = None  # force a reload through a broken encoder
    import gateway.router.model as rm

    broken = MiniLMEncoder(model_dir=tmp_path)  # no weights there
    original = rm.shared_encoder
    rm.shared_encoder = lambda layers, max_tokens: broken
    try:
        assert s.score(_m("x")) == HeuristicScorer().score(_m("x"))
    finally:
        rm.shared_encoder = original
    assert s.failures == 1


def test_malformed_messages_do_not_raise(scorer):
    before = scorer.failures
    assert 0.0 <= scorer.score([{"role": "user", "content": None}]) <= 1.0
    assert 0.0 <= scorer.score(["not a dict"]) <= 1.0
    assert scorer.failures == before + 1


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
