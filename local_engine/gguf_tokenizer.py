"""Build the engine's ``Tokenizer`` from a GGUF file's ``tokenizer.*`` metadata.

Byte-level BPE vocabularies (``tokenizer.ggml.model = "gpt2"``: GPT-2, SmolLM, Llama 3, Qwen2)
are rebuilt with the ``tokenizers`` library: the vocabulary and merges from the file, the
pre-tokenizer chosen by ``tokenizer.ggml.pre`` from ``PRE_TOKENIZER_SPLITS`` (the regexes
llama.cpp uses for each), control tokens (type 3) added as special tokens so that chat markup
like ``<|im_start|>`` stays one token. The chat template is ``tokenizer.chat_template``.

Other vocabularies (SentencePiece ``llama``, ``t5``, ...) are refused with a ``GGUFError``
that says what works instead: a Hugging Face ``tokenizer.json`` in the GGUF file's folder is
used in preference to the metadata (see ``loader.GGUFCheckpoint``).
"""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from local_engine.gguf_checkpoint import GGUFError
from local_engine.tokenizer import Tokenizer

__all__ = ["PRE_TOKENIZER_SPLITS", "tokenizer_from_gguf"]

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> the regexes applied in order before byte-level BPE (as in llama.cpp)
PRE_TOKENIZER_SPLITS: dict[str, tuple[str, ...]] = {
    "default": (_GPT2_SPLIT,),
    "gpt2": (_GPT2_SPLIT,),
    "smollm": (r"\p{N}", _GPT2_SPLIT),  # digits one by one, then GPT-2's split
    "starcoder": (r"\p{N}", _GPT2_SPLIT),
    "llama3": (_LLAMA3_SPLIT,),
    "llama-bpe": (_LLAMA3_SPLIT,),
    "smaug-bpe": (_LLAMA3_SPLIT,),
    "qwen2": (_QWEN2_SPLIT,),
    "deepseek-r1-qwen": (_QWEN2_SPLIT,),
}


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    if pre not in PRE_TOKENIZER_SPLITS:
        raise GGUFError(
            f"tokenizer.ggml.pre {pre!r} is not supported (supported: "
            f"{', '.join(sorted(PRE_TOKENIZER_SPLITS))}); put the model's tokenizer.json beside the file"
        )
    splits: list[pre_tokenizers.PreTokenizer] = [
        pre_tokenizers.Split(Regex(rx), behavior="isolated") for rx in PRE_TOKENIZER_SPLITS[pre]
    ]
    return pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )


def _token(md: dict[str, Any], key: str) -> str | None:
    token_id = md.get(f"tokenizer.ggml.{key}_token_id")
    tokens = md["tokenizer.ggml.tokens"]
    return tokens[int(token_id)] if token_id is not None and 0 <= token_id < len(tokens) else None


def tokenizer_from_gguf(md: dict[str, Any]) -> Tokenizer:
    """The tokenizer a GGUF file's metadata describes. Raises GGUFError for what we cannot build."""
    kind = md.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise GGUFError(
            f"GGUF tokenizer {kind!r} is not supported (only byte-level BPE, 'gpt2'); "
            "put the model's Hugging Face tokenizer.json beside the file"
        )
    tokens: list[str] = md["tokenizer.ggml.tokens"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in md.get("tokenizer.ggml.merges", [])]
    hf = HFTokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    hf.pre_tokenizer = _pre_tokenizer(str(md.get("tokenizer.ggml.pre", "default")))
    hf.decoder = decoders.ByteLevel()
    types = md.get("tokenizer.ggml.token_type") or []
    hf.add_special_tokens(
        [
            AddedToken(tokens[i], special=True, normalized=False)
            for i, t in enumerate(types)
            if t == TOKEN_TYPE_CONTROL
        ]
    )
    hf.add_tokens(
        [
            AddedToken(tokens[i], special=False, normalized=False)
            for i, t in enumerate(types)
            if t == TOKEN_TYPE_USER_DEFINED
        ]
    )
    special = {
        f"{name}_token": tok
        for name in ("bos", "eos", "unknown", "padding")
        if (tok := _token(md, name)) is not None
    }
    special = {
        {"unknown_token": "unk_token", "padding_token": "pad_token"}.get(k, k): v
        for k, v in special.items()
    }
    bos = special.get("bos_token")
    if md.get("tokenizer.ggml.add_bos_token") and bos is not None:
        hf.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    eos_ids = {
        int(md[key])
        for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")
        if key in md
    }
    return Tokenizer(hf, special, md.get("tokenizer.chat_template"), eos_ids)
