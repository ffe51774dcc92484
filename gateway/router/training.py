"""Training: labelled prompts in, a RouterModel out (``fit``).

An item-response model (a Rasch-type model with a feature-predicted difficulty):

    P(arm a's answer on prompt i is not good enough) = sigmoid(d_i + b_a),  d_i = w . x_i

x_i are the prompt's standardised inputs (``model.design``), w is shared by every source and
label kind, and b_a is one free offset per (source, arm): a model's inability on that source,
or the base rate of a weak-vs-strong label. So RouterBench's eleven models, AlpacaEval's judge
preferences and open7's seven open models all inform one difficulty, and a source's or a
model's base rate never leaks into w. Weighted (each source n_s ** balance in total, a prompt's
weight split over its observations), L2 on w (toward ``prior``'s weights when given: an
operator's few labels adjust the shipped router rather than replace it), L-BFGS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gateway.router.errors import TrainingDataError
from gateway.router.labels import LabelledPrompt
from gateway.router.model import RouterConfig, RouterModel, anchor_vectors, column_names, design

__all__ = ["fit", "fit_design", "MIN_PROMPTS"]

MIN_PROMPTS = 20


def fit(
    prompts: Sequence[LabelledPrompt],
    config: RouterConfig | None = None,
    *,
    prior: RouterModel | None = None,
    meta: dict | None = None,
) -> RouterModel:
    """Fit a router on ``prompts`` (any mix of label kinds and sources)."""
    config = config or RouterConfig()
    _check(prompts)
    training_only = {"l2", "balance", "arm_scope"}
    if prior is not None and prior.config.model_dump(exclude=training_only) != (
        config.model_dump(exclude=training_only)
    ):
        raise TrainingDataError("the prior router was built with other inputs than this config")
    anchors = anchor_vectors(config)
    x = design(config, [p.messages for p in prompts], anchors)
    model = fit_design(x, prompts, config, prior=prior, meta=meta)
    model._anchors = anchors
    return model


def _check(prompts: Sequence[LabelledPrompt]) -> None:
    if len(prompts) < MIN_PROMPTS:
        raise TrainingDataError(f"need at least {MIN_PROMPTS} labelled prompts, got {len(prompts)}")
    ys = [o.y for p in prompts for o in p.observations]
    if any(not 0.0 <= y <= 1.0 for y in ys):  # also catches NaN
        raise TrainingDataError("every label must be in [0, 1]")
    if any(p.weight < 0 for p in prompts) or sum(p.weight for p in prompts) <= 0:
        raise TrainingDataError("weights must be non-negative and not all zero")
    if min(ys) == max(ys):
        raise TrainingDataError("all labels are equal: nothing to learn")


def fit_design(
    x: np.ndarray,
    prompts: Sequence[LabelledPrompt],
    config: RouterConfig,
    *,
    prior: RouterModel | None = None,
    meta: dict | None = None,
) -> RouterModel:
    """``fit`` on precomputed inputs ``x`` [N, C] (``design(config, ...)`` of the prompts)."""
    _check(prompts)
    n = len(prompts)
    columns = column_names(config)
    if x.shape != (n, len(columns)):
        raise ValueError(f"x must be [{n}, {len(columns)}], got {list(x.shape)}")
    if prior is None:
        mean, scale = x.mean(0), x.std(0)
        scale[scale < 1e-9] = 1.0
        w0 = np.zeros(len(columns))
    else:
        mean, scale, w0 = prior.mean, prior.scale, prior.coef
    xs = (x - mean) / scale  # [N, C]

    # observations, flattened: prompt index, arm index, label, weight
    sources = [p.source for p in prompts]
    counts = {s: sources.count(s) for s in set(sources)}
    share = {s: c**config.balance / c for s, c in counts.items()}  # per-prompt weight
    arm_ids: dict[str, int] = {}
    rows, arms, ys, ws = [], [], [], []
    for i, p in enumerate(prompts):
        for o in p.observations:
            rows.append(i)
            key = f"{p.source}|{o.arm}" if config.arm_scope == "source" else o.arm
            arms.append(arm_ids.setdefault(key, len(arm_ids)))
            ys.append(o.y)
            ws.append(p.weight * share[p.source] / len(p.observations))
    row, arm = np.array(rows), np.array(arms)
    y, w = np.array(ys), np.array(ws)
    w /= w.sum()  # the loss is a weighted mean: l2 means the same at any size
    n_arms = len(arm_ids)
    rate = np.bincount(arm, w * y, n_arms) / np.maximum(np.bincount(arm, w, n_arms), 1e-12)
    rate = np.clip(rate, 1e-3, 1 - 1e-3)
    coef, offsets = _newton(xs, row, arm, y, w, w0, config.l2, np.log(rate / (1 - rate)))
    arm_w = np.bincount(arm, w, n_arms)
    intercept = float(offsets @ arm_w)  # the arms' weighted mean offset
    names = list(arm_ids)
    return RouterModel(
        config=config,
        columns=columns,
        mean=mean,
        scale=scale,
        coef=coef,
        intercept=intercept,
        meta=dict(
            meta or {},
            n_prompts=n,
            n_observations=int(len(y)),
            sources=sorted(counts),
            arm_offsets={
                a: round(float(v - intercept), 4) for a, v in zip(names, offsets, strict=True)
            },
        ),
    )


def _newton(
    xs: np.ndarray,
    row: np.ndarray,
    arm: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    w0: np.ndarray,
    l2: float,
    b0: np.ndarray,
    max_iter: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise sum_o w_o BCE(y_o, xs[row_o] . coef + b[arm_o]) + l2/2 |coef - w0|^2 by
    Newton's method with step halving (the objective is convex; ~10 steps; the Hessian is
    only (C + A)^2, C columns and A arms)."""
    from scipy.sparse import csr_matrix

    n, c = xs.shape
    n_arms = len(b0)
    ridge = np.concatenate([np.full(c, l2), np.full(n_arms, 1e-8)])

    def objective(coef: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
        z = (xs @ coef)[row] + b[arm]  # [M]
        d = coef - w0
        return float(w @ (np.logaddexp(0.0, z) - y * z)) + 0.5 * l2 * float(d @ d), z

    coef, b = w0.astype(np.float64).copy(), b0.astype(np.float64).copy()
    f, z = objective(coef, b)
    for _ in range(max_iter):
        p = 0.5 * (1.0 + np.tanh(0.5 * z))
        r, h = w * (p - y), w * p * (1.0 - p)  # [M] gradient and curvature per observation
        grad = np.concatenate(
            [xs.T @ np.bincount(row, r, n) + l2 * (coef - w0), np.bincount(arm, r, n_arms)]
        )
        rh = csr_matrix((h, (row, arm)), shape=(n, n_arms))  # [N, A]
        h_row = np.asarray(rh.sum(1)).ravel()  # [N]
        hess = np.empty((c + n_arms, c + n_arms))
        hess[:c, :c] = (xs * h_row[:, None]).T @ xs
        cross = np.asarray(rh.T @ xs)  # [A, C]
        hess[c:, :c], hess[:c, c:] = cross, cross.T
        hess[c:, c:] = np.diag(np.asarray(rh.sum(0)).ravel())
        hess[np.diag_indices_from(hess)] += ridge
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-4:
            f_new, z_new = objective(coef - t * step[:c], b - t * step[c:])
            if f_new <= f - 1e-4 * t * float(grad @ step):
                break
            t /= 2
        coef, b = coef - t * step[:c], b - t * step[c:]
        converged = f - f_new < 1e-10 * max(abs(f), 1.0)
        f, z = f_new, z_new
        if converged:
            break
    return coef, b
