import json
from pathlib import Path

import numpy as np
import pytest

from gateway.router.embedding import EMBED_DIM, MiniLMEncoder
from gateway.router.errors import RouterModelError

TEXTS = [
    "How do I reverse a linked list in place?",
    "hello",
    "Prove that the square root of 2 is irrational.",
]


def test_full_model_matches_sentence_transformers():
    # reference vectors were produced by sentence-transformers itself (see "generated_by")
    ref = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())
    ours = MiniLMEncoder(max_tokens=256, layers=6).encode(ref["texts"])
    np.testing.assert_allclose(ours, np.array(ref["embeddings"]), atol=2e-5)


def test_static_embedding_is_unit_norm_and_batch_independent():
    enc = MiniLMEncoder(layers=0)
    together = enc.encode(TEXTS)
    alone = np.vstack([enc.encode([t]) for t in TEXTS])
    assert together.shape == (3, EMBED_DIM)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)  # padding does not leak into pooling


def test_long_texts_are_read_as_head_and_tail():
    enc = MiniLMEncoder(max_tokens=16, layers=0)  # reads ~32 chars of each end
    head, tail = "please summarize the text below ", " and answer in french at the end"
    a, b, c = enc.encode(
        [
            head + "apples and pears " * 20 + tail,
            head + "rockets, orbits, fuel " * 20 + tail,  # only the middle differs: not read
            head + "apples and pears " * 20 + " then write it as a poem please",
        ]
    )
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(a, c, atol=1e-3)  # the tail is read


def test_bad_settings_and_missing_model(tmp_path):
    with pytest.raises(ValueError):
        MiniLMEncoder(max_tokens=4)
    with pytest.raises(ValueError):
        MiniLMEncoder(layers=7)
    with pytest.raises(RouterModelError, match="cannot load"):
        MiniLMEncoder(model_dir=tmp_path).encode(["x"])
