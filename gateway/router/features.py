"""Cheap, topic-free features of a request: the signals that should transfer across datasets.

Length, math and code density, reasoning and constraint markers, multiple-choice structure,
non-English share and conversation depth. Pure Python + numpy, well under 1 ms per prompt
(one word scan with cached word classes, a few regexes, long prompts clipped); the names
are part of the artefact (a model trained with other names refuses to load).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from gateway.routing.scorer import Messages, prompt_text

_WORD = re.compile(r"[a-z][a-z+#'-]*")


def _category(
    words: str, prefixes: str = "", phrases: str = ""
) -> tuple[frozenset, tuple, frozenset]:
    """A marker category: whole words, word prefixes (stems), and two-word phrases."""
    return frozenset(words.split()), tuple(prefixes.split()), frozenset(phrases.split(","))


# order matters: index i is the i-th marker count in text_features
_CATEGORIES = (
    _category(  # math
        "equation equations integral derivative total average ratio sum product prove proof theorem "
        "lemma prime primes remainder digit digits fraction fractions area volume speed rate cost costs "
        "each per twice half times percent percentage",
        "calculat solv probabilit integra derivativ matri vector polynomi",
        "how many,how much",
    ),
    _category(  # code
        "def class return python javascript java c++ sql regex code api script array list string "
        "integer complexity bug import const var print",
        "function program algorithm implement debug compil recursi",
    ),
    _category(  # reasoning
        "why therefore implies if then suppose given consider determine find which tradeoff tradeoffs "
        "trade-off trade-offs",
        "explain reason deriv compar analy analys evaluat justif infer deduc logic puzzl assum",
        "step by,pros and",
    ),
    _category(  # constraints
        "must should exactly only without ensure format json table include avoid each word words "
        "sentence sentences paragraph paragraphs don't",
        "bullet limit",
        "at least,at most,no more,do not",
    ),
    _category(  # creative
        "story poem essay email letter imagine pretend roleplay role-play write creative slogan tweet "
        "joke song lyrics blog",
    ),
)


@lru_cache(maxsize=1 << 16)
def _word_hits(word: str) -> tuple[int, ...]:
    return tuple(
        int(word in exact or (bool(pre) and word.startswith(pre))) for exact, pre, _ in _CATEGORIES
    )


def _marker_counts(text: str) -> list[int]:
    words = _WORD.findall(text.lower())
    counts = [0] * len(_CATEGORIES)
    for w in words:
        for i, h in enumerate(_word_hits(w)):
            counts[i] += h
    bigrams = {f"{a} {b}" for a, b in zip(words, words[1:], strict=False)}
    for i, (_, _, phrases) in enumerate(_CATEGORIES):
        if len(phrases) > 1 or "" not in phrases:
            counts[i] += len(bigrams & phrases)
    return counts


_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?%?")
_DIGIT = re.compile(r"\d")
_MATH_SYMBOL = re.compile(r"[=+*/^<>≤≥∑∫√π×÷$]|\\(?:frac|sqrt|sum|int|cdot|times|le|ge|pi)\b")
_CODE_SYMBOL = re.compile(r"```|[{}\[\];]|=>|->|::|==|!=|\w\(")
_CHOICE_LINE = re.compile(r"^\s*\(?[A-Ea-e][).:]\s+\S", re.MULTILINE)
# features read at most this much of a prompt: a head and a tail, where instructions sit
MAX_FEATURE_CHARS = 8000

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_lines",
    "log_numbers",
    "digit_share",
    "math_symbols",
    "math_words",
    "code_words",
    "code_symbols",
    "has_code_block",
    "reason_words",
    "constraint_words",
    "creative_words",
    "questions",
    "choice_lines",
    "non_ascii_share",
    "avg_word_len",
    "log_user_turns",
    "has_system",
)


def _per_100w(count: int, words: int) -> float:
    # density, squashed: a long prompt with many markers does not dominate
    return math.log1p(100.0 * count / max(words, 10))


def clip_text(text: str, limit: int) -> str:
    """Head and tail of a long text (instructions sit at either end of a long prompt)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "\n...\n" + text[-half:]


def text_features(text: str, user_turns: int = 1, has_system: bool = False) -> list[float]:
    n_chars = len(text)  # the whole prompt's size; the rest reads a clipped text
    text = clip_text(text, MAX_FEATURE_CHARS)
    words = text.split()
    n_words = max(len(words), round(len(words) * n_chars / max(len(text), 1)))
    n_read = len(words)
    math_w, code_w, reason_w, constraint_w, creative_w = _marker_counts(text)
    non_ascii = 0 if text.isascii() else len(text.encode("utf-8")) - len(text)
    return [
        math.log1p(n_chars),
        math.log1p(n_words),
        math.log1p(text.count("\n") + 1),
        math.log1p(len(_NUMBER.findall(text))),
        len(_DIGIT.findall(text)) / max(len(text), 1),
        _per_100w(len(_MATH_SYMBOL.findall(text)), n_read),
        _per_100w(math_w, n_read),
        _per_100w(code_w, n_read),
        _per_100w(len(_CODE_SYMBOL.findall(text)), n_read),
        float("```" in text),
        _per_100w(reason_w, n_read),
        _per_100w(constraint_w, n_read),
        _per_100w(creative_w, n_read),
        math.log1p(text.count("?")),
        math.log1p(len(_CHOICE_LINE.findall(text))),
        min(non_ascii / max(len(text), 1), 1.0),
        min(sum(map(len, words)) / max(n_read, 1), 20.0) / 10.0,
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
