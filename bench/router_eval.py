"""Routing quality of the learned router vs random, length-only and the heuristic scorer.

RouteLLM metrics (arXiv 2406.18665) on the shared test splits (shared/data/routing), with
weak = Mixtral-8x7B and strong = GPT-4 Turbo. Two protocols:
  in-dist   train on every source's train split, test on each source's test split;
  transfer  leave-one-source-out: train on the other sources' train splits only, test on the
            held-out source's test split. This is the number that predicts how the router
            does on new traffic (the issue's held-out benchmarks are not in shared/).

    python bench/router_eval.py [--data ../shared/data/routing] [--configs default,none,raw]
Prints a table and writes bench/results/router_eval.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.router import model as router_model  # noqa: E402
from gateway.router.metrics import routing_curve  # noqa: E402
from gateway.router.model import RouterConfig, train  # noqa: E402
from gateway.router.shared_data import Example, load_split  # noqa: E402
from gateway.routing.heuristic import HeuristicScorer  # noqa: E402

CONFIGS: dict[str, RouterConfig] = {
    "default": RouterConfig(),  # prior-anchored, static-embedding anchors, c=0.001
    "weak-prior": RouterConfig(c=0.01),
    "no-prior": RouterConfig(use_prior=False, c=0.01),
    "features-only": RouterConfig(embedding="none"),
    "anchors-6layer": RouterConfig(encoder_layers=6, encoder_max_tokens=128),
    "raw-static": RouterConfig(embedding="raw", use_prior=False, c=0.01),
    "raw-6layer": RouterConfig(
        embedding="raw", use_prior=False, c=0.01, encoder_layers=6, encoder_max_tokens=128
    ),
    "no-source-effects": RouterConfig(source_effects=False),
}


def _memoise_encoders() -> None:
    """Bench-only: encode each distinct text once per encoder across the many trainings."""
    original = router_model.shared_encoder

    def cached(layers: int, max_tokens: int):
        enc = original(layers, max_tokens)
        if getattr(enc, "_memo", None) is None:
            memo: dict[str, np.ndarray] = {}
            raw = enc.encode

            def encode(texts, batch_size: int = 64):
                todo = [t for t in dict.fromkeys(texts) if t not in memo]
                if todo:
                    for t, v in zip(todo, raw(todo, batch_size), strict=True):
                        memo[t] = v
                return (
                    np.stack([memo[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)
                )

            enc._memo = memo
            enc.encode = encode
        return enc

    router_model.shared_encoder = cached


def _msgs(examples: list[Example]) -> list[list[dict]]:
    return [[{"role": "user", "content": e.prompt}] for e in examples]


def _metrics(scores, test: list[Example]) -> dict:
    curve = routing_curve(scores, [e.weak_quality for e in test], [e.strong_quality for e in test])
    weak = float(np.mean([e.weak_quality for e in test]))
    strong = float(np.mean([e.strong_quality for e in test]))
    share95 = next(
        (float(s) for s in curve.shares if curve.quality_share(weak, strong, s) >= 0.95), 1.0
    )
    return {
        "apgr": round(curve.apgr(), 4),
        "cpt50": round(curve.cpt(0.5), 4),
        "cpt80": round(curve.cpt(0.8), 4),
        "share_for_95pct_quality": round(share95, 4),
    }


def _fit_predict(
    cfg: RouterConfig, train_sets: dict[str, list[Example]], test: list[Example]
) -> np.ndarray:
    ex = [e for v in train_sets.values() for e in v]
    m = train(_msgs(ex), [e.target for e in ex], groups=[e.source for e in ex], config=cfg)
    return m.predict(_msgs(test))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "routing")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "router_eval.json")
    args = ap.parse_args()
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown configs {unknown}; known: {sorted(CONFIGS)}")
    _memoise_encoders()
    t0 = time.perf_counter()
    train_sets, test_sets = load_split(args.data, "train"), load_split(args.data, "test")
    heur = HeuristicScorer()
    results: dict = {
        "command": " ".join(sys.argv),
        "weak": "mixtral-8x7b",
        "strong": "gpt-4-1106/turbo",
        "splits": {},
    }
    for src, test in test_sets.items():
        row: dict = {"n": len(test)}
        row["random"] = {"apgr": 0.5, "cpt50": 0.5, "cpt80": 0.8, "share_for_95pct_quality": None}
        # noise band: spread of APGR over random orderings of this (small) test set
        rng = np.random.default_rng(0)
        rand = [_metrics(rng.random(len(test)), test)["apgr"] for _ in range(200)]
        row["random"]["apgr_sd_over_orderings"] = round(float(np.std(rand)), 4)
        row["length"] = _metrics([len(e.prompt) for e in test], test)
        row["heuristic"] = _metrics(heur.score_batch(_msgs(test)), test)
        row["oracle"] = _metrics([e.strong_quality - e.weak_quality for e in test], test)
        others = {k: v for k, v in train_sets.items() if k != src}
        for name in names:
            row[f"{name}/transfer"] = _metrics(_fit_predict(CONFIGS[name], others, test), test)
            row[f"{name}/in-dist"] = _metrics(_fit_predict(CONFIGS[name], train_sets, test), test)
        results["splits"][src] = row
    # mean over splits of each method's metric
    methods = [k for k in next(iter(results["splits"].values())) if k != "n"]
    results["mean"] = {
        m: {
            k: round(
                float(
                    np.mean([r[m][k] for r in results["splits"].values() if r[m][k] is not None])
                ),
                4,
            )
            for k in ("apgr", "cpt50", "cpt80")
        }
        for m in methods
    }
    results["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(results, indent=1))
    print(
        f"{'method':34s}" + "".join(f"{s[:12]:>28s}" for s in results["splits"]) + f"{'mean':>22s}"
    )
    print(
        f"{'':34s}"
        + "".join(f"{'APGR CPT50 CPT80 95%Q':>28s}" for _ in results["splits"])
        + f"{'APGR CPT50 CPT80':>22s}"
    )
    for m in methods:
        cells = []
        for r in results["splits"].values():
            v = r[m]
            q = v["share_for_95pct_quality"]
            cells.append(
                f"{v['apgr']:6.3f} {v['cpt50']:5.2f} {v['cpt80']:5.2f} {'' if q is None else f'{q:5.2f}':>5s}"
            )
        mu = results["mean"][m]
        print(
            f"{m:34s}"
            + "".join(f"{c:>28s}" for c in cells)
            + f"{mu['apgr']:8.3f} {mu['cpt50']:5.2f} {mu['cpt80']:5.2f}"
        )
    print(f"({results['seconds']} s; written to {args.out})")


if __name__ == "__main__":
    main()
