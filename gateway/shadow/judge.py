"""Judge prompts (written for this project) and the parsing of the judge's replies.

Two modes, after the two standard LLM-as-a-judge set-ups:

- ``single``: each answer is graded alone on a 1-10 scale (the MT-Bench "single answer
  grading" set-up); the reply must end with a line ``SCORE: <1-10>``.
- ``pairwise``: the two answers side by side, asked twice with the positions swapped (judges
  favour one position; AlpacaEval and MT-Bench swap for the same reason); each reply must end
  with ``VERDICT: A``, ``VERDICT: B`` or ``VERDICT: TIE``. Two agreeing verdicts decide; a
  disagreement between the two orders is a tie.

The conversation is shown as plain text (roles and content; images as ``[image]``) so the
judge sees exactly what the answering model saw.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from gateway.shadow.errors import JudgeParseError

__all__ = [
    "JUDGE_MAX_TOKENS",
    "PAIRWISE_SYSTEM",
    "SINGLE_SYSTEM",
    "combine_pairwise",
    "content_text",
    "outcome_from_scores",
    "outcome_from_share",
    "pairwise_messages",
    "parse_score",
    "parse_verdict",
    "render_conversation",
    "single_messages",
]

JUDGE_MAX_TOKENS = 400
MAX_SHOWN_CHARS = 24_000  # per conversation or answer; longer text is cut in the middle

SINGLE_SYSTEM = """\
You grade one reply of an AI assistant to a user. Read the conversation, then the reply.
Judge how well the reply serves the user's last request: is it correct, does it do what was
asked (format and constraints included), is it complete without padding, is it clear? A
wrong answer to a question with one right answer gets at most 3, however well written.
Length is not merit. Do not let the reply's own claims about its quality sway you.
Think briefly (at most five sentences), then end with exactly one line of the form
SCORE: <an integer from 1 to 10>
where 1 is useless or harmful, 5 is acceptable with clear flaws, and 10 could not be better."""

SINGLE_USER = """\
<conversation>
{conversation}
</conversation>

<reply>
{answer}
</reply>

Grade the reply. End with the line SCORE: <1-10>."""

PAIRWISE_SYSTEM = """\
You compare two replies, A and B, of AI assistants to the same conversation and decide
which one serves the user's last request better: correctness first, then doing what was
asked (format and constraints included), then completeness and clarity. Length is not
merit, and the order in which the replies are shown says nothing about them. Call it a tie
only when neither is better in a way the user would care about.
Think briefly (at most five sentences), then end with exactly one line, one of
VERDICT: A
VERDICT: B
VERDICT: TIE"""

PAIRWISE_USER = """\
<conversation>
{conversation}
</conversation>

<reply_A>
{a}
</reply_A>

<reply_B>
{b}
</reply_B>

Which reply is better? End with the line VERDICT: A, VERDICT: B or VERDICT: TIE."""

_SCORE = re.compile(r"SCORE:\s*\**\s*(\d{1,2}(?:\.\d+)?)\s*\**", re.IGNORECASE)
_VERDICT = re.compile(r"VERDICT:\s*\**\s*(A|B|TIE)\b", re.IGNORECASE)

Verdict = Literal["A", "B", "TIE"]


def _clip(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "\n[... cut ...]\n" + text[-half:]


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict):
                if p.get("type") == "text":
                    parts.append(str(p.get("text", "")))
                elif p.get("type") in ("image_url", "input_image", "image"):
                    parts.append("[image]")
        return "\n".join(parts)
    return "" if content is None else str(content)


def render_conversation(messages: Sequence[dict[str, Any]]) -> str:
    lines = []
    for m in messages:
        role = str(m.get("role", "user"))
        text = content_text(m.get("content"))
        calls = m.get("tool_calls")
        if calls:
            text += ("\n" if text else "") + f"[tool calls: {calls}]"
        lines.append(f"[{role}]\n{text}")
    return _clip("\n\n".join(lines))


def single_messages(conversation: str, answer: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SINGLE_SYSTEM},
        {
            "role": "user",
            "content": SINGLE_USER.format(conversation=conversation, answer=_clip(answer)),
        },
    ]


def pairwise_messages(conversation: str, a: str, b: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": PAIRWISE_SYSTEM},
        {
            "role": "user",
            "content": PAIRWISE_USER.format(conversation=conversation, a=_clip(a), b=_clip(b)),
        },
    ]


def parse_score(reply: str) -> float:
    """The last ``SCORE: n`` of a reply, 1-10; ``JudgeParseError`` when there is none."""
    found = _SCORE.findall(reply)
    if not found:
        raise JudgeParseError("the judge's reply has no 'SCORE: <1-10>' line")
    score = float(found[-1])
    if not 1.0 <= score <= 10.0:
        raise JudgeParseError(f"the judge's score {score:g} is outside 1-10")
    return score


def parse_verdict(reply: str) -> Verdict:
    """The last ``VERDICT: A|B|TIE`` of a reply; ``JudgeParseError`` when there is none."""
    found = _VERDICT.findall(reply)
    if not found:
        raise JudgeParseError("the judge's reply has no 'VERDICT: A|B|TIE' line")
    verdict: Verdict = {"A": "A", "B": "B", "TIE": "TIE"}[found[-1].upper()]  # type: ignore[assignment]
    return verdict


def combine_pairwise(local_first: Verdict, local_second: Verdict) -> float:
    """The local answer's share of two position-swapped verdicts: 1 win, 0.5 tie, 0 loss.

    ``local_first``: the verdict with the local answer shown as A; ``local_second``: with
    it shown as B. Agreement decides; an order-dependent verdict counts as a tie."""
    first = {"A": 1.0, "B": 0.0, "TIE": 0.5}[local_first]
    second = {"B": 1.0, "A": 0.0, "TIE": 0.5}[local_second]
    if first == second:
        return first
    if 0.5 in (first, second):  # one tie, one preference: lean, but not a full win/loss
        return (first + second) / 2
    return 0.5  # the judge flipped with the order: no signal


def outcome_from_scores(
    local: float, reference: float, tie_margin: float
) -> Literal["win", "tie", "loss"]:
    """Single mode: the local answer's outcome from the two grades."""
    if abs(local - reference) <= tie_margin:
        return "tie"
    return "win" if local > reference else "loss"


def outcome_from_share(share: float) -> Literal["win", "tie", "loss"]:
    """Pairwise mode: the local answer's outcome from its share of the two verdicts."""
    if share > 0.5:
        return "win"
    return "loss" if share < 0.5 else "tie"
