"""The router model at inference: features -> standardise -> one linear difficulty -> sigmoid.

Inputs per prompt (``RouterConfig``): the cheap features of ``features.py`` and a MiniLM
embedding of the prompt, either raw (384 dimensions) or reduced to cosine similarities with
a few hand-written concept anchors. The weights come from ``training.fit``, an item-response
fit over every label kind at once; the score is the difficulty squashed to (0, 1): higher =
more open models fail the prompt / the strong model is needed more. Policies compare it to a
threshold that is usually calibrated to an escalation share, so only its order matters there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gateway.router.embedding import EMBED_DIM, MiniLMEncoder
from gateway.router.features import FEATURE_NAMES, feature_matrix
from gateway.routing.scorer import Messages, prompt_text

ANCHORS: tuple[str, ...] = (
    "a multi-step math word problem with numbers to calculate",
    "prove a mathematical theorem or solve an equation",
    "write code: implement a function or algorithm in a programming language",
    "debug or explain this code snippet",
    "a tricky logic puzzle or riddle that needs careful reasoning",
    "a multiple-choice question testing expert knowledge in science, law or medicine",
    "a factual question about history, geography or a famous person",
    "analyse and compare trade-offs, give a detailed technical explanation",
    "write a story, poem or creative piece",
    "write a short email, letter or message",
    "casual chit-chat or a greeting",
    "give simple advice or recommendations",
    "role-play as a character",
    "summarize or rewrite the following text",
    "translate this sentence to another language",
    "brainstorm a list of ideas",
)

# defaults chosen by the leave-one-source-out mean of bench/router_eval.py
DEFAULT_L2 = 0.01
DEFAULT_BALANCE = 0.0


class RouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    features: bool = True  # the cheap features of features.py
    embedding: Literal["none", "anchors", "raw"] = "raw"
    encoder_layers: int = Field(0, ge=0, le=6)  # 0: static token vectors (~1 ms a prompt)
    encoder_max_tokens: int = Field(256, ge=8, le=512)
    l2: float = Field(DEFAULT_L2, gt=0, description="L2 penalty on the standardised weights")
    # each source weighs n_s ** balance in total: 0 = sources equal, 1 = prompts equal
    balance: float = Field(DEFAULT_BALANCE, ge=0, le=1)
    # "source": one offset per (source, arm), so only differences within a source teach the
    # weights; "global": one per arm (a model's ability is the same everywhere), so the
    # weights also explain why one source's prompts fail more than another's
    arm_scope: Literal["source", "global"] = "source"


@cache
def shared_encoder(layers: int, max_tokens: int) -> MiniLMEncoder:
    """One encoder per setting per process (the weights are loaded lazily on first use)."""
    return MiniLMEncoder(max_tokens=max_tokens, layers=layers)


def anchor_vectors(config: RouterConfig) -> np.ndarray | None:
    if config.embedding != "anchors":
        return None
    return shared_encoder(config.encoder_layers, config.encoder_max_tokens).encode(list(ANCHORS))


def design(
    config: RouterConfig, batch: Sequence[Messages], anchors: np.ndarray | None = None
) -> np.ndarray:
    """[N, len(column_names(config))] float64: the model's inputs before standardising."""
    parts = [feature_matrix(batch)] if config.features else []  # [N, F]
    if config.embedding != "none":
        enc = shared_encoder(config.encoder_layers, config.encoder_max_tokens)
        emb = enc.encode([prompt_text(m) for m in batch]).astype(np.float64)  # [N, 384]
        if config.embedding == "anchors":
            if anchors is None:
                anchors = anchor_vectors(config)
            assert anchors is not None  # embedding == "anchors"
            emb = emb @ anchors.T.astype(np.float64)  # [N, A]
        parts.append(emb)
    return np.hstack(parts) if parts else np.zeros((len(batch), 0))


def column_names(config: RouterConfig) -> list[str]:
    names = list(FEATURE_NAMES) if config.features else []
    if config.embedding == "anchors":
        names += [f"anchor:{a}" for a in ANCHORS]
    elif config.embedding == "raw":
        names += [f"emb{i}" for i in range(EMBED_DIM)]
    return names


@dataclass
class RouterModel:
    config: RouterConfig
    columns: list[str]
    mean: np.ndarray  # [C]
    scale: np.ndarray  # [C]
    coef: np.ndarray  # [C] difficulty weights per standardised column
    intercept: float  # the training arms' mean offset
    meta: dict = field(default_factory=dict)  # provenance, per-arm offsets
    _anchors: np.ndarray | None = field(default=None, repr=False)

    def decision(self, batch: Sequence[Messages]) -> np.ndarray:
        """Difficulty logit per request, [N]."""
        if self._anchors is None and self.config.embedding == "anchors":
            self._anchors = anchor_vectors(self.config)
        x = design(self.config, batch, self._anchors)
        return self.decision_from_design(x)

    def decision_from_design(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept  # [N]

    def predict(self, batch: Sequence[Messages]) -> np.ndarray:
        """Score per request, [N] in (0, 1): higher = harder for the self-hosted model."""
        z = self.decision(batch)
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid, overflow-free
