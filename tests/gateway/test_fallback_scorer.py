"""The one difficulty-scorer fallback (gateway.routing.fallback), with the real learned router."""

import json
import subprocess
import sys

from gateway.router import artifact
from gateway.router.embedding import MiniLMEncoder
from gateway.router.scorer import LearnedScorer
from gateway.routing.fallback import NEUTRAL, FallbackScorer
from gateway.routing.heuristic import HeuristicScorer
from gateway.runtime import build_scorer


def _m(t):
    return [{"role": "user", "content": t}]


def test_unusable_artefact_scores_with_the_heuristic_and_counts(tmp_path):
    (tmp_path / "router.json").write_text(json.dumps({"format": "nope"}))
    s = build_scorer("learned", str(tmp_path))
    assert s.primary is None and "not a gateway router" in s.load_error
    h = HeuristicScorer()
    assert s.score(_m("Prove it.")) == h.score(_m("Prove it."))
    assert s.score_batch([_m("a"), _m("b")]) == h.score_batch([_m("a"), _m("b")])
    assert s.failures == 3


def test_the_shipped_router_does_not_fall_back():
    s = build_scorer("learned", None)
    assert isinstance(s.primary, LearnedScorer) and s.load_error is None
    assert 0 <= s.score(_m("hi")) <= 1 and s.failures == 0


def test_a_runtime_failure_of_the_learned_path_is_counted_not_raised(tmp_path, monkeypatch):
    import gateway.router.model as rm

    s = FallbackScorer(LearnedScorer(artifact.load(None)))
    broken = MiniLMEncoder(model_dir=tmp_path)  # no weights there
    monkeypatch.setattr(rm, "shared_encoder", lambda layers, max_tokens: broken)
    assert s.score(_m("x")) == HeuristicScorer().score(_m("x"))
    assert s.score_batch([_m("y"), _m("z")]) == HeuristicScorer().score_batch([_m("y"), _m("z")])
    assert s.failures == 3


def test_malformed_messages_do_not_raise():
    s = build_scorer("learned", None)
    assert 0.0 <= s.score([{"role": "user", "content": None}]) <= 1.0
    assert s.score(["not a dict"]) == NEUTRAL  # neither path can read it
    assert s.failures >= 1


class _NaN:
    name = "nan"

    def score(self, messages):
        return float("nan")

    def score_batch(self, batch):
        return [float("nan")] * len(batch)


def test_non_finite_scores_fall_back():
    s = FallbackScorer(_NaN())
    assert s.score(_m("hi")) == HeuristicScorer().score(_m("hi")) and s.failures == 1


def test_routing_does_not_import_the_learned_router():
    """gateway.routing is the lower layer: gateway.router builds on it, never the reverse."""
    code = (
        "import sys, pkgutil, importlib, gateway.routing as r\n"
        "for m in pkgutil.iter_modules(r.__path__): importlib.import_module('gateway.routing.' + m.name)\n"
        "bad = sorted(m for m in sys.modules if m.startswith('gateway.router.') or m == 'gateway.router')\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
