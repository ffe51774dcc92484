"""`gateway router ...` subcommands.

    gateway router train --data FILE.jsonl --out DIR [--source-effects/--no-source-effects]
    gateway router score --input IN.jsonl --output OUT.jsonl [--model DIR]
    gateway router build-default --data SHARED_ROUTING_DIR [--out DIR]

File formats: see gateway.router.dataset. ``build-default`` rebuilds the shipped artefact
(gateway/router/artifacts/default) from the public outcomes in shared/data/routing.
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


def register(subparsers: argparse._SubParsersAction) -> None:
    router = subparsers.add_parser("router", help="train and run the difficulty router")
    sub = router.add_subparsers(dest="router_command", required=True)

    t = sub.add_parser("train", help="train a router on labelled prompts (JSONL)")
    t.add_argument(
        "--data", type=Path, default=None, help="training JSONL (see docs for the format)"
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
    t.add_argument("--embedding", choices=["anchors", "none", "raw"], default="anchors")
    t.add_argument(
        "--c",
        type=float,
        default=None,
        help="inverse pull toward the prior weights (default 0.001)",
    )
    t.add_argument(
        "--no-prior", action="store_true", help="regularise toward zero instead of the prior"
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
    from gateway.router.model import RouterConfig, train

    if args.c is not None and not args.c > 0:
        raise RouterError("--c must be > 0")
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
    extra = {} if args.c is None else {"c": args.c}
    config = RouterConfig(embedding=args.embedding, use_prior=not args.no_prior, **extra)
    t0 = time.perf_counter()
    model = train(
        [r.messages for r in rows],
        [r.target for r in rows],
        weights=[r.weight for r in rows],
        groups=[r.source for r in rows],
        config=config,
        meta={"trained_on": _trained_on(args)},
    )
    path = artifact.save(model, args.out)
    print(f"trained on {len(rows)} rows in {time.perf_counter() - t0:.1f}s -> {path}")
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


def _build_default(args: argparse.Namespace) -> int:
    from gateway.router import artifact
    from gateway.router.model import train
    from gateway.router.shared_data import load_split

    sets = load_split(args.data, "train")
    ex = [e for v in sets.values() for e in v]
    model = train(
        [[{"role": "user", "content": e.prompt}] for e in ex],
        [e.target for e in ex],
        groups=[e.source for e in ex],
        meta={"trained_on": "shared/data/routing train splits: " + ", ".join(sorted(sets))},
    )
    out = artifact.BUILTIN_DIR if args.out is None else args.out
    print(f"built from {len(ex)} examples -> {artifact.save(model, out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m gateway.router.cli router ...`), same as `gateway router`."""
    ap = argparse.ArgumentParser(prog="gateway")
    register(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
