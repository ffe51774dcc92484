"""RouteLLM's metrics for routers on judged shadow records (``gateway router evaluate``).

For each router (a candidate artefact, the current one, the scores stored at request time,
and random routing): APGR, CPT(50%) (the share of strong calls that recovers half of the
quality gap) and the strong share needed for 95% of the all-reference quality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gateway.router.metrics import RoutingCurve, routing_curve
from gateway.router.shadow_labels import qualities
from gateway.shadow.errors import ShadowSourceError
from gateway.shadow.records import ShadowRecord

__all__ = ["RouterScore", "format_table", "score_router", "random_router"]

QUALITY_TARGET = 0.95


@dataclass(frozen=True, slots=True)
class RouterScore:
    name: str
    n: int
    apgr: float
    cpt50: float
    share_for_95: float  # strong-call share reaching 95% of the reference's quality (1: never)


def _arrays(records: Sequence[ShadowRecord]) -> tuple[np.ndarray, np.ndarray]:
    q = np.array([qualities(r) for r in records], dtype=np.float64).reshape(-1, 2)
    return q[:, 0], q[:, 1]


def _share_for(curve: RoutingCurve, weak: float, strong: float, target: float) -> float:
    quality = (weak + curve.pgr * (strong - weak)) / strong  # [N+1]
    hit = np.nonzero(quality >= target - 1e-12)[0]
    return float(curve.shares[hit[0]]) if hit.size else 1.0


def score_router(
    name: str, scores: Sequence[float] | np.ndarray, records: Sequence[ShadowRecord]
) -> RouterScore:
    weak, strong = _arrays(records)
    try:
        curve = routing_curve(list(map(float, scores)), weak.tolist(), strong.tolist())
    except ValueError as exc:
        raise ShadowSourceError(
            f"cannot score routers on these {len(records)} records: {exc}"
        ) from exc
    w, s = float(weak.mean()), float(strong.mean())
    return RouterScore(
        name, len(records), curve.apgr(), curve.cpt(0.5), _share_for(curve, w, s, QUALITY_TARGET)
    )


def random_router(records: Sequence[ShadowRecord]) -> RouterScore:
    """Random routing in expectation: PGR(share) = share."""
    weak, strong = _arrays(records)
    w, s = float(weak.mean()), float(strong.mean())
    need = 0.0 if w >= QUALITY_TARGET * s else (QUALITY_TARGET * s - w) / (s - w)
    return RouterScore("random", len(records), 0.5, 0.5, min(1.0, need))


def format_table(rows: Sequence[RouterScore]) -> str:
    width = max(len(r.name) for r in rows) + 2
    out = [f"{'router':<{width}}{'APGR':>7}{'CPT(50%)':>10}{'strong share for 95%':>22}"]
    for r in rows:
        out.append(f"{r.name:<{width}}{r.apgr:>7.3f}{r.cpt50:>10.1%}{r.share_for_95:>22.1%}")
    return "\n".join(out)
