"""The learned router: features -> standardise -> logistic regression -> Platt calibration.

Inputs per prompt: the cheap features of ``features.py`` and, optionally, a MiniLM embedding
reduced to cosine similarities with a few hand-written concept anchors ("a multi-step math
word problem", "casual chit-chat", ...). Anchors rather than raw embedding dimensions because
raw dimensions let the classifier learn the training sets' topics, which does not transfer
(see bench/results/router_eval.md); anchors are a handful of priors whose weights are learned.

Training with ``source_effects`` adds one indicator column per training source and drops it
at inference (replaced by its weighted mean), so the other weights explain difficulty *within*
a source rather than the sources' different base rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gateway.router.embedding import MiniLMEncoder
from gateway.router.errors import TrainingDataError
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


# Prior logit weights per standardised column: what is known to transfer (longer prompts,
# math, code, explicit reasoning, many constraints and long conversations need the strong
# model more; short creative/social requests less). Training pulls the weights toward these
# instead of toward zero, so a small or narrow data set adjusts the prior rather than
# replacing it with its own topics. Columns not listed have a prior of 0.
PRIOR: dict[str, float] = {
    "log_chars": 0.4,
    "log_words": 0.2,
    "log_numbers": 0.2,
    "math_symbols": 0.15,
    "math_words": 0.15,
    "code_words": 0.1,
    "code_symbols": 0.1,
    "has_code_block": 0.1,
    "reason_words": 0.15,
    "constraint_words": 0.1,
    "creative_words": -0.1,
    "log_user_turns": 0.1,
    "non_ascii_share": 0.05,
    "anchor:" + ANCHORS[0]: 0.2,
    "anchor:" + ANCHORS[1]: 0.2,
    "anchor:" + ANCHORS[2]: 0.15,
    "anchor:" + ANCHORS[3]: 0.1,
    "anchor:" + ANCHORS[4]: 0.2,
    "anchor:" + ANCHORS[7]: 0.1,
    "anchor:" + ANCHORS[8]: -0.1,
    "anchor:" + ANCHORS[9]: -0.1,
    "anchor:" + ANCHORS[10]: -0.2,
    "anchor:" + ANCHORS[12]: -0.1,
    "anchor:" + ANCHORS[13]: -0.1,
    "anchor:" + ANCHORS[15]: -0.1,
}


class RouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    embedding: Literal["none", "anchors", "raw"] = "anchors"
    encoder_layers: int = Field(0, ge=0, le=6)
    encoder_max_tokens: int = Field(256, ge=8, le=512)
    # 0.001: the prior dominates unless the data disagree consistently; a weak prior (0.01)
    # lets the shared sets' format artefacts in (bench/results/router_eval.md compares both)
    c: float = Field(0.001, gt=0, description="inverse strength of the L2 pull toward PRIOR")
    use_prior: bool = True
    source_effects: bool = True
    balance_sources: bool = True


@cache
def shared_encoder(layers: int, max_tokens: int) -> MiniLMEncoder:
    """One encoder per setting per process (the weights are loaded lazily on first use)."""
    return MiniLMEncoder(max_tokens=max_tokens, layers=layers)


def _design(
    config: RouterConfig, batch: Sequence[Messages], anchor_vecs: np.ndarray | None
) -> np.ndarray:
    x = feature_matrix(batch)  # [N, F]
    if config.embedding == "none":
        return x
    enc = shared_encoder(config.encoder_layers, config.encoder_max_tokens)
    emb = enc.encode([prompt_text(m) for m in batch])  # [N, 384]
    if config.embedding == "raw":
        return np.hstack([x, emb])
    assert anchor_vecs is not None  # built in __post_init__/train for "anchors"
    return np.hstack([x, emb @ anchor_vecs.T])  # [N, F + A]


def _anchor_vecs(config: RouterConfig) -> np.ndarray | None:
    if config.embedding != "anchors":
        return None
    return shared_encoder(config.encoder_layers, config.encoder_max_tokens).encode(list(ANCHORS))


def column_names(config: RouterConfig) -> list[str]:
    names = list(FEATURE_NAMES)
    if config.embedding == "anchors":
        names += [f"anchor:{a}" for a in ANCHORS]
    elif config.embedding == "raw":
        names += [f"emb{i}" for i in range(384)]
    return names


@dataclass
class RouterModel:
    config: RouterConfig
    columns: list[str]
    mean: np.ndarray  # [C]
    scale: np.ndarray  # [C]
    coef: np.ndarray  # [C]
    intercept: float
    platt_a: float
    platt_b: float
    meta: dict = field(default_factory=dict)
    _anchors: np.ndarray | None = field(default=None, repr=False)

    def _anchor_matrix(self) -> np.ndarray | None:
        if self._anchors is None:
            self._anchors = _anchor_vecs(self.config)
        return self._anchors

    def decision(self, batch: Sequence[Messages]) -> np.ndarray:
        x = _design(self.config, batch, self._anchor_matrix())
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept  # [N]

    def predict(self, batch: Sequence[Messages]) -> np.ndarray:
        """Calibrated P(strong needed) per request, [N] in (0, 1)."""
        z = self.platt_a * self.decision(batch) + self.platt_b
        return 1.0 / (1.0 + np.exp(-z))


def _fit_logistic(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, prior: np.ndarray, lam: np.ndarray | float
) -> tuple[np.ndarray, float]:
    """Weighted logistic regression with soft targets and an L2 penalty centred on ``prior``
    (not on zero): sum(lam/2 * (coef - prior)^2), ``lam`` per column or one for all. The
    intercept is not penalised."""
    from scipy.optimize import minimize

    ws = w / w.sum() * len(w)  # weights average 1, so lam means the same at any n
    lam_d = np.broadcast_to(np.asarray(lam, dtype=np.float64), prior.shape)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef, b = theta[:-1], theta[-1]
        z = x @ coef + b  # [N]
        # log(1 + e^z) - y z, computed stably
        nll = np.logaddexp(0.0, z) - y * z
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid, overflow-free
        r = ws * (p - y)  # [N]
        d = coef - prior
        f = float(ws @ nll) + 0.5 * float(lam_d @ (d * d))
        grad = np.concatenate([x.T @ r + lam_d * d, [r.sum()]])
        return f, grad

    theta0 = np.concatenate([prior, [0.0]])
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 1000})
    return res.x[:-1], float(res.x[-1])


def prior_vector(columns: Sequence[str], extra: int = 0) -> np.ndarray:
    """Prior weights per standardised column (see PRIOR); ``extra`` zero-prior columns appended."""
    return np.array([PRIOR.get(c, 0.0) for c in columns] + [0.0] * extra)


def train(
    batch: Sequence[Messages],
    targets: Sequence[float],
    *,
    weights: Sequence[float] | None = None,
    groups: Sequence[str] | None = None,
    config: RouterConfig | None = None,
    meta: dict | None = None,
) -> RouterModel:
    """Fit a RouterModel. ``targets``: P(strong needed) in [0, 1] (0/1 labels or soft);
    ``groups``: source of each example (for balancing and source effects)."""
    config = config or RouterConfig()
    n = len(batch)
    y = np.asarray(targets, dtype=np.float64)
    if n < 20 or y.shape != (n,):
        raise TrainingDataError(f"need at least 20 examples with one target each, got {n}")
    if np.isnan(y).any() or np.any((y < 0) | (y > 1)):
        raise TrainingDataError("targets must be in [0, 1]")
    if y.min() == y.max():
        raise TrainingDataError("all targets are equal: nothing to learn")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or np.any(w < 0) or w.sum() <= 0:
        raise TrainingDataError("weights must be one non-negative number per example")
    g = np.array(["all"] * n if groups is None else [str(v) for v in groups])
    sources = sorted(set(g.tolist()))
    if config.balance_sources:  # each source weighs the same in total
        for s in sources:
            m = g == s
            if w[m].sum() > 0:
                w[m] *= n / (len(sources) * w[m].sum())

    anchors = _anchor_vecs(config)
    columns = column_names(config)
    x = _design(config, batch, anchors)  # [N, C]
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-9] = 1.0
    xs = (x - mean) / scale
    use_effects = config.source_effects and len(sources) > 1
    onehot = (g[:, None] == np.array(sources)[None, :]).astype(np.float64)  # [N, S]
    xs_fit = np.hstack([xs, onehot]) if use_effects else xs
    prior = prior_vector(columns, len(sources) if use_effects else 0)
    if not config.use_prior:
        prior = np.zeros_like(prior)
    # source indicators act as per-source intercepts: (almost) unpenalised
    lam = np.full(prior.shape, 1.0 / config.c)
    lam[len(columns) :] = 1e-3

    coef, intercept = _fit_logistic(xs_fit, y, w, prior, lam)
    if use_effects:  # fold the source columns into the intercept at their weighted mean
        share = np.array([w[g == s].sum() for s in sources]) / w.sum()
        intercept += float(coef[len(columns) :] @ share)
        coef = coef[: len(columns)]
    # Platt scaling on out-of-fold decisions (monotone: the ranking is unchanged)
    rng = np.random.default_rng(0)
    fold = rng.integers(0, 5, n)
    oof = np.empty(n)
    for k in range(5):
        tr, te = fold != k, fold == k
        ck, bk = _fit_logistic(xs_fit[tr], y[tr], w[tr], prior, lam)
        oof[te] = xs_fit[te] @ ck + bk
    ab, platt_b = _fit_logistic(oof[:, None], y, w, np.zeros(1), 1e-6)
    # a <= 0 would mean the held-out decisions rank backwards; keep the model's order (a
    # near-flat score) rather than flip it, and say so in the artefact
    platt_a = max(float(ab[0]), 1e-3)
    meta = dict(meta or {}, calibration_slope=round(float(ab[0]), 4))
    return RouterModel(
        config=config,
        columns=columns,
        mean=mean,
        scale=scale,
        coef=coef,
        intercept=intercept,
        platt_a=platt_a,
        platt_b=platt_b,
        meta=dict(meta, n_examples=n, sources=sources),
        _anchors=anchors,
    )
