"""Routing quality of the difficulty router on every shared source, RouteLLM's metrics.

    nice python bench/router_eval.py [--data ../shared/data/routing] [--methods a,b,...]

Sixteen sources (gateway.router.shared_data.sources). Two protocols per learned method:
  transfer  leave-one-source-out: train on every source except the held-out one's benchmark
            family (ARC-Easy/ARC-Challenge and the two MBPP copies go out together), test on
            the held-out source. What predicts behaviour on traffic the router never saw.
  own30     the operator with labels of their own: train on a fixed 30% of one source (a hash
            of the prompt), test on its other 70%; "own30+prior" pulls the weights toward the
            transfer model of that source instead of toward zero.
Baselines on the same prompts: random (its noise band: APGR over 200 random orderings,
mean - 2 sd), prompt length (longest first) and the heuristic scorer.
Metrics (gateway.router.metrics): APGR, CPT(50%), CPT(80%), the strong share that reaches 95%
of the strong model's quality. Embeddings of the shared prompts are cached on disk under
bench/results/tmp/ (one file per encoder setting), so each prompt is embedded once.
Writes bench/results/router_eval.json and prints the tables (markdown).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.router import model as router_model  # noqa: E402
from gateway.router.labels import LabelledPrompt, Observation  # noqa: E402
from gateway.router.metrics import routing_curve  # noqa: E402
from gateway.router.model import RouterConfig, design  # noqa: E402
from gateway.router.shared_data import Source, sources  # noqa: E402
from gateway.router.training import fit_design  # noqa: E402
from gateway.routing.heuristic import HeuristicScorer  # noqa: E402

TMP = ROOT / "bench" / "results" / "tmp"


@dataclass(frozen=True)
class Method:
    config: RouterConfig
    kinds: tuple[str, ...] = ("routerbench", "alpacaeval", "open7")  # training collections
    collapse: bool = False  # one label per prompt (its observations' mean), one arm per source


DEFAULT = RouterConfig()
METHODS: dict[str, Method] = {
    "default": Method(DEFAULT),
    "raw-only": Method(DEFAULT.model_copy(update={"features": False})),
    "features-only": Method(DEFAULT.model_copy(update={"embedding": "none"})),
    "anchors": Method(DEFAULT.model_copy(update={"embedding": "anchors"})),
    "raw-6layer": Method(
        DEFAULT.model_copy(update={"encoder_layers": 6, "encoder_max_tokens": 128})
    ),
    "l2=0.001": Method(DEFAULT.model_copy(update={"l2": 0.001})),
    "l2=0.1": Method(DEFAULT.model_copy(update={"l2": 0.1})),
    "l2=1": Method(DEFAULT.model_copy(update={"l2": 1.0})),
    "balance=0.5": Method(DEFAULT.model_copy(update={"balance": 0.5})),
    "mean-label": Method(DEFAULT, collapse=True),
    "global-arms": Method(DEFAULT.model_copy(update={"arm_scope": "global"})),
    "global-arms l2=0.1": Method(DEFAULT.model_copy(update={"arm_scope": "global", "l2": 0.1})),
    "features-only global": Method(
        DEFAULT.model_copy(update={"arm_scope": "global", "embedding": "none"})
    ),
    "weak-vs-strong only": Method(DEFAULT, kinds=("routerbench", "alpacaeval")),
    "open7 only": Method(DEFAULT, kinds=("open7",)),
}


# ------------------------------------------------------------ embedding cache on disk


def _cache_encoders() -> None:
    """Bench-only: each encoder setting keeps its vectors in bench/results/tmp/."""
    original = router_model.shared_encoder

    def cached(layers: int, max_tokens: int):
        enc = original(layers, max_tokens)
        if getattr(enc, "_disk", None) is not None:
            return enc
        path = TMP / f"minilm_L{layers}_T{max_tokens}.npz"
        memo: dict[str, np.ndarray] = {}
        if path.exists():
            with np.load(path) as z:
                memo = dict(zip(z["keys"].tolist(), z["vecs"], strict=True))
        raw = enc.encode

        def encode(texts, batch_size: int = 64):
            keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
            todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in memo}
            if todo:
                print(f"  embedding {len(todo)} prompts (L{layers}, {max_tokens} tokens)")
                for k, v in zip(todo, raw(list(todo.values()), batch_size), strict=True):
                    memo[k] = v
                if len(todo) > 50:
                    TMP.mkdir(parents=True, exist_ok=True)
                    np.savez(path, keys=np.array(list(memo)), vecs=np.stack(list(memo.values())))
            return np.stack([memo[k] for k in keys]) if keys else np.zeros((0, 384), np.float32)

        enc._disk = path
        enc.encode = encode
        return enc

    router_model.shared_encoder = cached


# ------------------------------------------------------------ metrics


def metrics(scores, weak: list[float], strong: list[float]) -> dict:
    curve = routing_curve(scores, weak, strong)
    w, s = float(np.mean(weak)), float(np.mean(strong))
    share95 = next((float(x) for x in curve.shares if curve.quality_share(w, s, x) >= 0.95), 1.0)
    return {
        "apgr": round(curve.apgr(), 4),
        "cpt50": round(curve.cpt(0.5), 4),
        "cpt80": round(curve.cpt(0.8), 4),
        "q95": round(share95, 4),
    }


def noise_band(weak: list[float], strong: list[float]) -> dict:
    rng = np.random.default_rng(0)
    a = [routing_curve(rng.random(len(weak)), weak, strong).apgr() for _ in range(200)]
    return {"sd": round(float(np.std(a)), 4), "floor": round(0.5 - 2 * float(np.std(a)), 4)}


# ------------------------------------------------------------ data plumbing


def _is_train30(p: LabelledPrompt) -> bool:
    text = p.messages[0]["content"]
    return hashlib.sha256(text.encode()).digest()[0] < 77  # ~30%


def _collapse(p: LabelledPrompt) -> LabelledPrompt:
    y = float(np.mean([o.y for o in p.observations]))
    return replace(p, observations=(Observation("mean", y),))


class Data:
    """Sources, plus each method's design matrix over all prompts (computed once)."""

    def __init__(self, srcs: list[Source]) -> None:
        self.sources = srcs
        self.prompts = [p for s in srcs for p in s.prompts]
        self.index: dict[str, np.ndarray] = {}
        start = 0
        for s in srcs:
            self.index[s.name] = np.arange(start, start + len(s.prompts))
            start += len(s.prompts)
        self._x: dict[RouterConfig, np.ndarray] = {}

    def x(self, cfg: RouterConfig) -> np.ndarray:
        key = cfg.model_copy(update={"l2": 1.0, "balance": 0.0, "arm_scope": "source"})
        if key not in self._x:
            t = time.perf_counter()
            self._x[key] = design(cfg, [p.messages for p in self.prompts])
            print(
                f"  design {cfg.features=} {cfg.embedding=} L{cfg.encoder_layers}: "
                f"{time.perf_counter() - t:.1f}s"
            )
        return self._x[key]

    def fit(self, method: Method, idx: np.ndarray, prior=None):
        prompts = [self.prompts[i] for i in idx]
        if method.collapse:
            prompts = [_collapse(p) for p in prompts]
        return fit_design(self.x(method.config)[idx], prompts, method.config, prior=prior)

    def score(self, model, idx: np.ndarray) -> np.ndarray:
        return model.decision_from_design(self.x(model.config)[idx])


def _transfer_idx(data: Data, held: Source, kinds: tuple[str, ...]) -> np.ndarray:
    keep = [
        data.index[s.name]
        for s in data.sources
        if s.family != held.family and s.name.split("/")[0] in kinds
    ]
    return np.concatenate(keep)


# ------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "routing")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--own30", default="default", help="methods also run in the own30 protocol")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "router_eval.json")
    args = ap.parse_args()
    names = [n for n in args.methods.split(",") if n]
    own_names = [n for n in args.own30.split(",") if n]
    unknown = [n for n in names + own_names if n not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    _cache_encoders()
    t0 = time.perf_counter()
    data = Data(sources(args.data))
    heur = HeuristicScorer()
    res: dict = {"sources": {}, "transfer": {}, "own30": {}}
    for s in data.sources:
        msgs = [p.messages for p in s.prompts]
        res["sources"][s.name] = {
            "n": len(s.prompts),
            "random": noise_band(s.weak_quality, s.strong_quality),
        }
        res["transfer"].setdefault("length", {})[s.name] = metrics(
            [len(m[0]["content"]) for m in msgs], s.weak_quality, s.strong_quality
        )
        res["transfer"].setdefault("heuristic", {})[s.name] = metrics(
            heur.score_batch(msgs), s.weak_quality, s.strong_quality
        )
    transfer_models: dict[tuple[str, str], object] = {}
    for name in names:
        m = METHODS[name]
        t = time.perf_counter()
        for s in data.sources:
            model = data.fit(m, _transfer_idx(data, s, m.kinds))
            transfer_models[(name, s.name)] = model
            res["transfer"].setdefault(name, {})[s.name] = metrics(
                data.score(model, data.index[s.name]), s.weak_quality, s.strong_quality
            )
        print(f"{name}: {time.perf_counter() - t:.1f}s")
    # own30: train on 30% of a source, test on the other 70%
    for s in data.sources:
        idx = data.index[s.name]
        tr = np.array([i for i in idx if _is_train30(data.prompts[i])])
        te = np.array([i for i in idx if not _is_train30(data.prompts[i])])
        local = te - idx[0]
        weak = [s.weak_quality[i] for i in local]
        strong = [s.strong_quality[i] for i in local]
        res["sources"][s.name]["own30_test_n"] = len(te)
        res["sources"][s.name]["own30_random"] = noise_band(weak, strong)
        cell = res["own30"]
        cell.setdefault("length", {})[s.name] = metrics(
            [len(data.prompts[i].messages[0]["content"]) for i in te], weak, strong
        )
        for name in own_names:
            m = METHODS[name]
            scratch = data.fit(m, tr)
            cell.setdefault(name, {})[s.name] = metrics(data.score(scratch, te), weak, strong)
            prior = transfer_models.get((name, s.name))
            if prior is not None:
                tuned = data.fit(m, tr, prior=prior)
                cell.setdefault(f"{name}+prior", {})[s.name] = metrics(
                    data.score(tuned, te), weak, strong
                )
                cell.setdefault(f"{name}/transfer", {})[s.name] = metrics(
                    data.score(prior, te), weak, strong
                )
    for proto in ("transfer", "own30"):
        for name, per in res[proto].items():
            vals = list(per.values())
            per_src = {k: v for k, v in per.items()}
            floor_key = "random" if proto == "transfer" else "own30_random"
            res[proto][name] = {
                "per_source": per_src,
                "mean": {k: round(float(np.mean([v[k] for v in vals])), 4) for k in vals[0]},
                "worst_apgr": min(vals, key=lambda v: v["apgr"])["apgr"],
                "worst_source": min(per_src, key=lambda k: per_src[k]["apgr"]),
                "below_noise_floor": [
                    k
                    for k, v in per_src.items()
                    if v["apgr"] < res["sources"][k][floor_key]["floor"]
                ],
            }
    res["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(render(res))
    print(f"({res['seconds']} s; written to {args.out})")


def render(res: dict) -> str:
    srcs = list(res["sources"])
    short = [
        s.split("/")[0][:2].replace("ro", "rb").replace("al", "ae").replace("op", "o7")
        + "/"
        + s.split("/")[1][:8]
        for s in srcs
    ]
    out = []
    for proto, floor_key, n_key in (
        ("transfer", "random", "n"),
        ("own30", "own30_random", "own30_test_n"),
    ):
        out.append(f"\n### {proto}: APGR per source (mean CPT50 / CPT80 / 95%Q at the right)\n")
        out.append(
            "| method | "
            + " | ".join(short)
            + " | mean APGR | worst | CPT50 | CPT80 | 95%Q | < floor |"
        )
        out.append("|---" * (len(srcs) + 7) + "|")
        out.append(
            "| n | " + " | ".join(str(res["sources"][s][n_key]) for s in srcs) + " | | | | | | |"
        )
        out.append(
            "| random floor | "
            + " | ".join(f"{res['sources'][s][floor_key]['floor']:.3f}" for s in srcs)
            + " | 0.500 | | 0.50 | 0.80 | | |"
        )
        for name, r in res[proto].items():
            cells = [f"{r['per_source'][s]['apgr']:.3f}" for s in srcs]
            mu = r["mean"]
            out.append(
                f"| {name} | "
                + " | ".join(cells)
                + f" | **{mu['apgr']:.3f}** | {r['worst_apgr']:.3f} | {mu['cpt50']:.2f} | {mu['cpt80']:.2f} | {mu['q95']:.2f} | {len(r['below_noise_floor'])} |"
            )
    return "\n".join(out)


if __name__ == "__main__":
    main()
