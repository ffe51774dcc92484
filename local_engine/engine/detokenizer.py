"""Incremental detokenization with stop-string hold-back, one instance per request.

Per token the work is bounded by the window and the held-back tail, never by the output length.

Text is decoded over a short sliding window of token ids (never the whole output), TGI-style:
``decode(ids[prefix:])`` minus ``decode(ids[prefix:read])``, waiting while the window ends in an
incomplete UTF-8 sequence (U+FFFD). The window starts on the last few prompt tokens so a first
token with a leading-space marker (SentencePiece) decodes with its space.

Stop strings: the output is cut where the first stop string begins and the stop string is never
released. While streaming, a tail of the text that could still grow into a stop string is held
back until the next tokens decide it.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Detokenizer"]

PROMPT_CONTEXT_TOKENS = 5  # prompt tokens kept in the window, for leading-space handling
_INCOMPLETE = "\ufffd"


class _Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


def _held_suffix_len(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of some stop string."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


class Detokenizer:
    def __init__(
        self,
        tokenizer: _Decoder,
        prompt_token_ids: list[int],
        stop: list[str] | None = None,
        skip_special_tokens: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        self._ids = list(prompt_token_ids[-PROMPT_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self._stops = [s for s in (stop or []) if s]
        self._max_stop = max((len(s) for s in self._stops), default=0)
        self._unreleased = ""  # decoded text not handed out yet (a held-back tail, mostly)
        self.stopped = False  # a stop string was found; the text was cut before it

    def _decode(self, start: int, end: int | None = None) -> str:
        return self._tokenizer.decode(self._ids[start:end], skip_special_tokens=self._skip_special)

    def add_token(self, token_id: int) -> bool:
        """Feed one generated token; True when the text now contains a stop string."""
        if self.stopped:
            return True
        self._ids.append(token_id)
        prefix_text = self._decode(self._prefix_offset, self._read_offset)
        new_text = self._decode(self._prefix_offset)
        if len(new_text) <= len(prefix_text) or new_text.endswith(_INCOMPLETE):
            return False  # wait for the rest of a multi-byte character
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        self._append(new_text[len(prefix_text) :])
        return self.stopped

    def _append(self, delta: str) -> None:
        # released text never holds part of a stop string, so only the unreleased tail is searched
        start = max(len(self._unreleased) - self._max_stop + 1, 0)  # a match must touch the delta
        text = self._unreleased + delta
        cut = -1
        for stop in self._stops:
            i = text.find(stop, start)
            if i != -1 and (cut == -1 or i < cut):
                cut = i
        if cut != -1:
            text = text[:cut]
            self.stopped = True
        self._unreleased = text

    def flush(self) -> None:
        """At the end of the request: decode whatever the window still holds back."""
        if self.stopped or self._read_offset == len(self._ids):
            return
        prefix_text = self._decode(self._prefix_offset, self._read_offset)
        new_text = self._decode(self._prefix_offset)
        self._prefix_offset = self._read_offset = len(self._ids)
        if len(new_text) > len(prefix_text):
            self._append(new_text[len(prefix_text) :])

    def release(self, final: bool = False) -> str:
        """Text not yet handed out that can no longer turn into a stop string (all of it when
        ``final`` or once a stop string has cut the text)."""
        text = self._unreleased
        end = len(text)
        if not final and not self.stopped and self._stops:
            end -= _held_suffix_len(text[-self._max_stop :], self._stops)
        self._unreleased = text[end:]
        return text[:end]
