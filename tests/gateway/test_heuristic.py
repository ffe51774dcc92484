"""The transparent heuristic scorer: monotone in its signals, and its keyword prefilter exact."""

import json
import math
from importlib import resources

from gateway.routing import heuristic
from gateway.routing.heuristic import HeuristicScorer
from gateway.routing.scorer import prompt_text


def _unfiltered(messages) -> float:
    """The same score with every regex run (no keyword prefilter)."""
    text = prompt_text(messages)
    z = heuristic.BIAS + heuristic.LOG_LENGTH_WEIGHT * max(0.0, math.log(max(len(text), 1) / 200.0))
    z += heuristic.TURN_WEIGHT * max(0, len(messages) - 2)
    for name, (pattern, w) in heuristic.WEIGHTS.items():
        if name == "constraints":
            z += w * min(heuristic.MAX_CONSTRAINT_HITS, len(pattern.findall(text)))
        elif pattern.search(text):
            z += w
    return 1.0 / (1.0 + math.exp(-z))


def _corpus():
    raw = resources.files("gateway.routing").joinpath("calibration_prompts.jsonl").read_text()
    prompts = [json.loads(line)["prompt"] for line in raw.splitlines()]
    prompts += [
        "Prove that SELECT x\nFROM t is total",
        "def f(x): return x",
        "Compute 3 ^ 4",
        "$x^2$",
        "ANALYSE the TRADE-OFFS",
        "You MUST do it exactly so",
        "const g = (a) => a",
        "#include <stdio.h>",
        "Design an API",
        "class Foo(Bar): pass",
    ]
    return [[{"role": "user", "content": p}] for p in prompts]


def test_prefilter_never_changes_a_score():
    s = HeuristicScorer()
    for msgs in _corpus():
        assert s.score(msgs) == _unfiltered(msgs)


def test_signals_raise_the_score():
    s = HeuristicScorer()
    base = s.score([{"role": "user", "content": "What is the capital of France?"}])
    for hard in [
        "Prove rigorously that there are infinitely many primes.",
        "def f(x):\n    return x  # optimize this step by step",
    ]:
        assert s.score([{"role": "user", "content": hard}]) > base
    assert 0 < base < 0.5
    long = s.score([{"role": "user", "content": "word " * 2000}])
    assert long > base
