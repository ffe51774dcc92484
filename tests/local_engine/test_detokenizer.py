"""Incremental detokenization and stop-string hold-back, with real trained `tokenizers` models."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from local_engine.engine.detokenizer import Detokenizer

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Stop here. END of story, or is it? café naïve 日本語 テキスト 🙂🚀",
    "hello world, hello there; the end is near. STOP! ###",
] * 20


@pytest.fixture(scope="module")
def byte_level() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<eos>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


@pytest.fixture(scope="module")
def metaspace() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    specials = ["<unk>", "<eos>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False)
    )
    return tok


def stream(
    tok: Tokenizer, prompt: list[int], out: list[int], stop=None
) -> tuple[list[str], Detokenizer]:
    d = Detokenizer(tok, prompt, stop)
    pieces = []
    for t in out:
        stopped = d.add_token(t)
        pieces.append(d.release())
        if stopped:
            break
    d.flush()
    pieces.append(d.release(final=True))
    return pieces, d


@pytest.mark.parametrize("text", ["café naïve 日本語 🙂🚀 ok", "hello world, the end.", "🚀🚀🙂"])
def test_streamed_text_equals_full_decode_byte_level(byte_level, text):
    prompt = byte_level.encode("Stop here. ").ids
    out = byte_level.encode(text).ids
    assert len(out) > 3
    pieces, d = stream(byte_level, prompt, out)
    assert "".join(pieces) == byte_level.decode(out) == text
    assert all("\ufffd" not in p for p in pieces)  # partial characters are never streamed


def test_multibyte_characters_split_over_tokens_are_held_until_complete(byte_level):
    out = byte_level.encode("🙂").ids
    assert len(out) > 1  # the emoji is several byte tokens with this small vocab
    d = Detokenizer(byte_level, [0], None)
    for t in out[:-1]:
        d.add_token(t)
        assert d.release() == ""
    d.add_token(out[-1])
    assert d.release() == "🙂"


def test_leading_space_survives_with_sentencepiece_style_tokens(metaspace):
    enc = metaspace.encode("hello world the end")
    cut = next(i for i, t in enumerate(enc.tokens) if i > 0 and t.startswith("\u2581"))
    prompt, out = enc.ids[:cut], enc.ids[cut:]
    pieces, _ = stream(metaspace, prompt, out)
    expected = metaspace.decode(enc.ids)[len(metaspace.decode(prompt)) :]
    assert "".join(pieces) == expected
    assert expected.startswith(" ")


def test_special_tokens_are_skipped(byte_level):
    eos = byte_level.token_to_id("<eos>")
    out = byte_level.encode("hi there").ids + [eos]
    pieces, _ = stream(byte_level, [0], out)
    assert "".join(pieces) == "hi there"


@pytest.mark.parametrize("tok_name", ["byte_level", "metaspace"])
@pytest.mark.parametrize(
    "text,stops,expected",
    [
        ("hello world, the END of story", ["END"], "hello world, the "),
        ("hello world. STOP! more", ["STOP!", "xyz"], "hello world. "),
        ("the end is near", ["nearly", "is n"], "the end "),
        ("café naïve 日本語 🙂", ["語 🙂"], "café naïve 日本"),
        ("no stop in here at all", ["zzz", "###"], "no stop in here at all"),
        ("ENEND", ["END"], "EN"),
    ],
)
def test_stop_strings_never_leak_into_streamed_text(request, tok_name, text, stops, expected):
    tok = request.getfixturevalue(tok_name)
    out = tok.encode(text).ids
    released = ""
    d = Detokenizer(tok, [], stops)
    for t in out:
        stopped = d.add_token(t)
        released += d.release()
        assert expected.startswith(released)  # every streamed piece is a prefix of the answer
        assert not any(s in released for s in stops)
        if stopped:
            break
    d.flush()
    released += d.release(final=True)
    assert released == expected
    assert d.stopped == (expected != text)


def test_hold_back_is_released_once_disambiguated(byte_level):
    d = Detokenizer(byte_level, [], ["STOP!"])
    released = ""
    for t in byte_level.encode("hello STOP").ids:
        d.add_token(t)
        released += d.release()
    assert released == "hello "  # "STOP" could still become "STOP!"
    for t in byte_level.encode(" more").ids:
        d.add_token(t)
        released += d.release()
    assert released == "hello STOP more"
    assert not d.stopped


def test_final_release_flushes_held_text(byte_level):
    d = Detokenizer(byte_level, [], ["the end"])
    for t in byte_level.encode("up to the").ids:
        d.add_token(t)
    assert d.release() == "up to "
    assert d.release(final=True) == "the"


def test_random_token_streams_match_full_decode(byte_level):
    rng = random.Random(0)
    vocab = byte_level.get_vocab_size()
    for _ in range(50):
        out = [rng.randrange(1, vocab) for _ in range(rng.randrange(1, 30))]
        pieces, _ = stream(byte_level, [5, 6, 7], out)
        assert "".join(pieces) == byte_level.decode(out)
