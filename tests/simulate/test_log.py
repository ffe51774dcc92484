"""Reading request logs: both line shapes, timestamps, labels, and clear errors."""

from __future__ import annotations

import pytest

from gateway.simulate.log import Label, LogError, read_log
from tests.simulate.sim_helpers import chat


def test_bare_bodies_and_wrappers(log_file):
    path = log_file(
        [
            chat("hi"),
            {"model": "auto", "prompt": "once upon"},
            {"model": "auto", "input": "embed me"},
            {
                "request": chat("x", max_tokens=10),
                "headers": {"X-Data-Classification": "confidential"},
                "team": "legal",
                "key_name": "bot",
                "usage": {"prompt_tokens": 12, "completion_tokens": 3},
                "timestamp": "2025-05-01T00:00:10Z",
                "label": {"strong_needed": 1},
            },
        ]
    )
    reqs = read_log(path)
    assert [r.operation for r in reqs] == ["chat", "completions", "embeddings", "chat"]
    w = reqs[3]
    assert w.headers == {"x-data-classification": "confidential"}
    assert (w.team, w.key_name, w.prompt_tokens, w.completion_tokens) == ("legal", "bot", 12, 3)
    assert w.timestamp == 1746057610.0
    assert w.label == Label(weak=0.0, strong=1.0)
    assert reqs[0].team == "default" and reqs[0].label is None and reqs[0].timestamp is None


@pytest.mark.parametrize(
    ("ts", "want"),
    [
        (1746057610, 1746057610.0),
        (1746057610123, 1746057610.123),
        ("2025-05-01T00:00:10+00:00", 1746057610.0),
    ],
)
def test_timestamps(log_file, ts, want):
    (r,) = read_log(log_file([{"request": chat("x"), "timestamp": ts}]))
    assert r.timestamp == pytest.approx(want)


def test_label_forms(log_file):
    a, b = read_log(
        log_file(
            [
                {"request": chat("x"), "label": {"strong_needed": 0}},
                {"request": chat("x"), "label": {"weak_score": 0.25, "strong_score": 0.75}},
            ]
        )
    )
    assert a.label == Label(1.0, 1.0)
    assert b.label == Label(0.25, 0.75)


@pytest.mark.parametrize(
    ("line", "msg"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ({"model": "auto"}, "no messages, prompt or input"),
        ({"request": chat("x"), "colour": "red"}, "unknown field(s) next to request: colour"),
        ({"request": chat("x"), "timestamp": "yesterday"}, "not ISO 8601"),
        ({"request": chat("x"), "usage": {"prompt_tokens": -1}}, "usage.prompt_tokens"),
        (
            {"request": chat("x"), "usage": {"prompt_tokens_details": {"cached_tokens": "3"}}},
            "usage.prompt_tokens_details.cached_tokens must be a non-negative integer",
        ),
        (
            {"request": chat("x"), "usage": {"prompt_tokens_details": [3]}},
            "usage.prompt_tokens_details must be an object",
        ),
        (
            {"request": chat("x"), "usage": {"cache_creation_input_tokens": -2}},
            "usage.cache_creation_input_tokens",
        ),
        ({"request": chat("x"), "label": {"strong_needed": 2}}, "strong_needed must be 0 or 1"),
        (
            {"request": chat("x"), "label": {"weak_score": 1.5, "strong_score": 1}},
            "weak_score must be a number in [0, 1]",
        ),
        ({"request": chat("x"), "label": {"good": 1}}, "label must hold"),
        ({"request": chat("x"), "operation": "images"}, "operation must be one of"),
        ({"request": chat("x"), "headers": {"a": 1}}, "headers must be an object of strings"),
    ],
)
def test_bad_lines_name_file_and_line(log_file, line, msg):
    path = log_file([chat("fine"), "", line])
    with pytest.raises(LogError) as err:
        read_log(path)
    assert f"{path}:3:" in str(err.value)
    assert msg in str(err.value)


def test_empty_and_missing(log_file, tmp_path):
    with pytest.raises(LogError, match="holds no requests"):
        read_log(log_file(["", "  "]))
    with pytest.raises(LogError, match="cannot read request log"):
        read_log(tmp_path / "nope.jsonl")
