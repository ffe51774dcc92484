"""Cheap, topic-free features of a request: the signals that should transfer across datasets.

Length, math and code density, reasoning and constraint markers, multiple-choice structure,
non-English share and conversation depth. Pure Python + numpy, ~50 us per prompt; the names
are part of the artefact (a model trained with other names refuses to load).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from gateway.routing.scorer import Messages, prompt_text

_I = re.IGNORECASE | re.MULTILINE


def _words(*ws: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(ws) + r")\b", _I)


_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?%?")
_MATH_SYMBOL = re.compile(r"[=+*/^<>≤≥∑∫√π×÷]|\\(?:frac|sqrt|sum|int|cdot|times|le|ge|pi)\b|\$")
_MATH_WORD = _words(
    r"calculat\w*", r"solve\w*", r"equations?", r"probabilit\w*", r"integral\w*", r"derivative\w*",
    r"how many", r"how much", r"percent\w*", r"total", r"average", r"ratio", r"sum", r"product",
    r"prove", r"proof", r"theorem", r"lemma", r"matri\w+", r"vectors?", r"polynomial\w*", r"primes?",
    r"remainder", r"digits?", r"fractions?", r"area", r"volume", r"speed", r"rate", r"cost\w*",
    r"each", r"per", r"twice", r"half", r"times",
)
_CODE_WORD = _words(
    r"def", r"class", r"return", r"function\w*", r"python", r"javascript", r"java", r"c\+\+",
    r"sql", r"regex", r"code", r"program\w*", r"algorithm\w*", r"implement\w*", r"debug\w*",
    r"compile\w*", r"api", r"script", r"array", r"list", r"string", r"integer", r"recursi\w+",
    r"complexity", r"bug", r"import", r"const", r"var", r"print",
)
_CODE_SYMBOL = re.compile(r"```|[{}\[\];]|=>|->|::|==|!=|\w+\(\)?")
_REASON_WORD = _words(
    r"why", r"explain\w*", r"step[- ]by[- ]step", r"reason\w*", r"deriv\w+", r"compare\w*",
    r"analy[sz]\w*", r"evaluat\w*", r"justify\w*", r"therefore", r"implies", r"infer\w*",
    r"deduc\w+", r"logic\w*", r"puzzle\w*", r"if", r"then", r"suppose", r"assum\w+", r"given",
    r"consider", r"determine", r"find", r"which", r"trade-?offs?", r"pros and cons",
)
_CONSTRAINT_WORD = _words(
    r"must", r"should", r"exactly", r"at least", r"at most", r"no more than", r"only", r"without",
    r"ensure", r"format", r"bullet\w*", r"words?", r"sentences?", r"paragraphs?", r"json",
    r"table", r"include", r"avoid", r"do not", r"don't", r"limit\w*", r"each",
)
_CREATIVE_WORD = _words(
    r"story", r"poem", r"essay", r"email", r"letter", r"imagine", r"pretend", r"role-?play",
    r"write", r"creative", r"slogan", r"tweet", r"joke", r"song", r"lyrics", r"blog",
)
_CHOICE_LINE = re.compile(r"^\s*\(?[A-Ea-e][).:]\s+\S", re.MULTILINE)

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars", "log_words", "log_lines", "log_numbers", "digit_share", "math_symbols",
    "math_words", "code_words", "code_symbols", "has_code_block", "reason_words",
    "constraint_words", "creative_words", "questions", "choice_lines", "non_ascii_share",
    "avg_word_len", "log_user_turns", "has_system",
)


def _per_100w(count: int, words: int) -> float:
    # density, squashed: a long prompt with many markers does not dominate
    return math.log1p(100.0 * count / max(words, 10))


def text_features(text: str, user_turns: int = 1, has_system: bool = False) -> list[float]:
    n_chars = len(text)
    words = text.split()
    n_words = len(words)
    digits = sum(c.isdigit() for c in text)
    non_ascii = sum(ord(c) > 127 for c in text)
    return [
        math.log1p(n_chars),
        math.log1p(n_words),
        math.log1p(text.count("\n") + 1),
        math.log1p(len(_NUMBER.findall(text))),
        digits / max(n_chars, 1),
        _per_100w(len(_MATH_SYMBOL.findall(text)), n_words),
        _per_100w(len(_MATH_WORD.findall(text)), n_words),
        _per_100w(len(_CODE_WORD.findall(text)), n_words),
        _per_100w(len(_CODE_SYMBOL.findall(text)), n_words),
        float("```" in text),
        _per_100w(len(_REASON_WORD.findall(text)), n_words),
        _per_100w(len(_CONSTRAINT_WORD.findall(text)), n_words),
        _per_100w(len(_CREATIVE_WORD.findall(text)), n_words),
        math.log1p(text.count("?")),
        math.log1p(len(_CHOICE_LINE.findall(text))),
        non_ascii / max(n_chars, 1),
        min(sum(len(w) for w in words) / max(n_words, 1), 20.0) / 10.0,
        math.log1p(max(user_turns, 1)),
        float(has_system),
    ]


def message_features(messages: Messages) -> list[float]:
    turns = sum(1 for m in messages if m.get("role") == "user")
    system = any(m.get("role") == "system" for m in messages)
    return text_features(prompt_text(messages), turns, system)


def feature_matrix(batch: Sequence[Messages]) -> np.ndarray:
    """[N, len(FEATURE_NAMES)] float64."""
    rows = [message_features(m) for m in batch]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))
