"""`gateway router ...` subcommands.

    gateway router train --data FILE.jsonl --out DIR [--embedding raw|anchors|none]
                         [--no-features] [--l2 X] [--prior builtin|DIR|none]
                         [--from-shadow SOURCE [--holdout 0.2]]
    gateway router evaluate ... (gateway.shadow.cli)
    gateway router score --input IN.jsonl --output OUT.jsonl [--model DIR]
    gateway router build-default --data SHARED_ROUTING_DIR [--out DIR]

File formats: see gateway.router.dataset (every label kind). Training is
gateway.router.training.fit (labelled prompts in, a RouterModel out); ``build-default``
rebuilds the shipped artefact (gateway/router/artifacts/default) from the sixteen public
sources in shared/data/routing, deterministically.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

from gateway.router.errors import RouterError

# torch, numpy and the model load only when a router command runs, not when `gateway`
# builds its parser for another command

SCORE_CHUNK = 512
DEFAULT_PRIOR = "builtin"  # bench/router_eval.py own30: see the README's router section
# an operator's few labels: a firmer pull toward the prior than the shipped fit's 0.01 (own30
# mean APGR 0.527 with l2=0.1+prior vs 0.522 with 0.01+prior; prompt length 0.502)
TRAIN_L2 = 0.1


def register(subparsers: argparse._SubParsersAction) -> None:
    router = subparsers.add_parser("router", help="train and run the difficulty router")
    sub = router.add_subparsers(dest="router_command", required=True)

    t = sub.add_parser("train", help="train a router on labelled prompts (JSONL)")
    t.add_argument(
        "--data", type=Path, default=None, help="training JSONL (see docs for the formats)"
    )
    t.add_argument(
        "--from-shadow",
        default=None,
        metavar="SOURCE",
        help="also (or only) train on judged shadow records: a postgresql:// DSN or a JSONL file",
    )
    t.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="with --from-shadow: share of records held back for `router evaluate`",
    )
    t.add_argument("--out", type=Path, required=True, help="directory to write router.json into")
    t.add_argument("--embedding", choices=["raw", "anchors", "none"], default=None)
    t.add_argument("--no-features", action="store_true", help="embedding only, no cheap features")
    t.add_argument(
        "--l2", type=float, default=TRAIN_L2, help=f"L2 penalty on the weights (default {TRAIN_L2})"
    )
    t.add_argument(
        "--prior",
        default=None,
        help="pull the weights toward this router's ('builtin', a directory) instead of "
        "toward zero; 'none' trains from scratch (default: the built-in router, unless "
        "--embedding/--no-features ask for other inputs than it reads)",
    )
    t.set_defaults(func=functools.partial(_guarded, _train))

    s = sub.add_parser("score", help="score prompts offline: {id, prompt} -> {id, score}")
    s.add_argument("--input", type=Path, required=True)
    s.add_argument("--output", type=Path, required=True)
    s.add_argument("--model", default=None, help="artefact directory (default: the built-in one)")
    s.set_defaults(func=functools.partial(_guarded, _score))

    from gateway.shadow.cli import register_evaluate

    register_evaluate(sub)

    b = sub.add_parser(
        "build-default", help="rebuild the shipped artefact from shared/data/routing"
    )
    b.add_argument("--data", type=Path, required=True, help="the shared/data/routing directory")
    b.add_argument(
        "--out", type=Path, default=None, help="default: the built-in artefact's directory"
    )
    b.set_defaults(func=functools.partial(_guarded, _build_default))


def _guarded(func, args: argparse.Namespace) -> int:
    """User errors (bad file, bad artefact) print one line and exit 2, without a traceback."""
    try:
        return func(args)
    except RouterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace) -> int:
    from gateway.router import artifact
    from gateway.router.dataset import read_training
    from gateway.router.model import RouterConfig
    from gateway.router.training import fit

    if not args.l2 > 0:
        raise RouterError("--l2 must be > 0")
    update: dict = {}
    if args.embedding is not None:
        update["embedding"] = args.embedding
    if args.no_features:
        update["features"] = False
    update["l2"] = args.l2
    prior_name = args.prior or DEFAULT_PRIOR
    prior = None if prior_name == "none" else artifact.load(prior_name)
    base = prior.config if prior is not None else RouterConfig()
    config = RouterConfig.model_validate({**base.model_dump(), **update})
    inputs_differ = prior is not None and any(
        getattr(config, k) != getattr(prior.config, k) for k in update.keys() - {"l2"}
    )
    if inputs_differ and args.prior is not None:
        raise RouterError(
            "--embedding/--no-features ask for other inputs than the prior reads: "
            "drop --prior (or pass --prior none) to train from scratch"
        )
    if inputs_differ:
        prior = None  # other inputs: the built-in weights do not apply
    if args.from_shadow is not None:
        from gateway.shadow.cli import shadow_training_file
        from gateway.shadow.errors import ShadowError

        try:
            data, summary = shadow_training_file(args.from_shadow, args.holdout, args.data)
        except ShadowError as exc:
            raise RouterError(str(exc)) from exc
        print(summary)
        try:
            rows = read_training(data)
        finally:
            data.unlink()
    elif args.data is None:
        raise RouterError("give --data FILE, --from-shadow SOURCE, or both")
    else:
        rows = read_training(args.data)
    t0 = time.perf_counter()
    model = fit(rows, config, prior=prior, meta={"trained_on": _trained_on(args)})
    path = artifact.save(model, args.out)
    n_obs = sum(len(r.observations) for r in rows)
    print(
        f"trained on {len(rows)} prompts ({n_obs} observations) in "
        f"{time.perf_counter() - t0:.1f}s -> {path}"
    )
    return 0


def _trained_on(args: argparse.Namespace) -> str:
    names = [args.data.name] if args.data is not None else []
    if args.from_shadow is not None:
        names.append("shadow records")
    return " + ".join(names)


def _score(args: argparse.Namespace) -> int:
    from gateway.router import artifact
    from gateway.router.dataset import read_scoring

    model = artifact.load(args.model)
    n, t0 = 0, time.perf_counter()
    ids: list = []
    batch: list = []
    with args.output.open("w", encoding="utf-8") as out:

        def flush() -> None:
            for i, p in zip(ids, model.predict(batch), strict=True):
                out.write(json.dumps({"id": i, "score": round(float(p), 6)}) + "\n")
            ids.clear()
            batch.clear()

        for i, messages in read_scoring(args.input):
            ids.append(i)
            batch.append(messages)
            n += 1
            if len(batch) >= SCORE_CHUNK:
                flush()
                print(f"\rscored {n}", end="", file=sys.stderr)
        if batch:
            flush()
    print(
        f"\rscored {n} prompts in {time.perf_counter() - t0:.1f}s -> {args.output}", file=sys.stderr
    )
    return 0


def build_default(data: Path):
    """The shipped router: the default config fitted on every shared source."""
    from gateway.router.model import RouterConfig
    from gateway.router.shared_data import sources
    from gateway.router.training import fit

    srcs = sources(data)
    prompts = [p for s in srcs for p in s.prompts]
    return fit(
        prompts,
        RouterConfig(),
        meta={"trained_on": "shared/data/routing: " + ", ".join(s.name for s in srcs)},
    )


def _build_default(args: argparse.Namespace) -> int:
    from gateway.router import artifact

    model = build_default(args.data)
    out = artifact.BUILTIN_DIR if args.out is None else args.out
    print(f"built from {model.meta['n_prompts']} prompts -> {artifact.save(model, out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m gateway.router.cli router ...`), same as `gateway router`."""
    ap = argparse.ArgumentParser(prog="gateway")
    register(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
