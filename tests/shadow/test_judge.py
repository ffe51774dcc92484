"""Judge prompts and the parsing of verdicts."""

from __future__ import annotations

import pytest

from gateway.shadow import judge as J
from gateway.shadow.errors import JudgeParseError


def test_single_prompt_shows_conversation_and_answer():
    conv = J.render_conversation(
        [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "what is 2+2?"}, {"type": "image_url"}],
            },
        ]
    )
    assert conv == "[system]\nbe brief\n\n[user]\nwhat is 2+2?\n[image]"
    msgs = J.single_messages(conv, "4")
    assert msgs[0]["content"] == J.SINGLE_SYSTEM
    assert "<reply>\n4\n</reply>" in msgs[1]["content"] and conv in msgs[1]["content"]


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("ok\nSCORE: 7", 7.0),
        ("SCORE: 3\nwait, SCORE: 8", 8.0),
        ("score: **10**", 10.0),
        ("SCORE: 6.5", 6.5),
    ],
)
def test_parse_score_takes_the_last(reply, score):
    assert J.parse_score(reply) == score


@pytest.mark.parametrize("reply", ["no verdict", "SCORE: 0", "SCORE: 11", ""])
def test_parse_score_refuses(reply):
    with pytest.raises(JudgeParseError):
        J.parse_score(reply)


def test_parse_verdict():
    assert J.parse_verdict("thinking...\nVERDICT: b") == "B"
    assert J.parse_verdict("VERDICT: A\nVERDICT: TIE") == "TIE"
    with pytest.raises(JudgeParseError):
        J.parse_verdict("A is better")


@pytest.mark.parametrize(
    ("first", "second", "share", "outcome"),
    [
        ("A", "B", 1.0, "win"),  # local preferred in both positions
        ("B", "A", 0.0, "loss"),
        ("A", "A", 0.5, "tie"),  # the judge followed the position, not the answer
        ("TIE", "TIE", 0.5, "tie"),
        ("A", "TIE", 0.75, "win"),
        ("TIE", "A", 0.25, "loss"),
    ],
)
def test_position_swap_combination(first, second, share, outcome):
    assert J.combine_pairwise(first, second) == share
    assert J.outcome_from_share(share) == outcome


def test_single_outcome_with_margin():
    assert J.outcome_from_scores(7, 8, 0) == "loss"
    assert J.outcome_from_scores(7, 8, 1) == "tie"
    assert J.outcome_from_scores(9, 6, 1) == "win"


def test_long_text_is_cut_in_the_middle():
    text = "a" * 30_000 + "END"
    clipped = J.single_messages("c", text)[1]["content"]
    assert "[... cut ...]" in clipped and "END" in clipped and len(clipped) < 26_000
