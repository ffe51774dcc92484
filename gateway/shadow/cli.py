"""Command-line parts of shadow evaluation.

    gateway router train --from-shadow SOURCE [--data FILE] --out DIR   (router/cli.py)
    gateway router evaluate --model DIR --data SOURCE [--current DIR] [--holdout 0.2]
    gateway shadow calibrate --data SOURCE        cascade threshold from judged records
    gateway shadow export --data SOURCE --out FILE.jsonl   request log for `gateway simulate`
    gateway shadow summary --data SOURCE          win/tie/loss per rule and difficulty decile

SOURCE is a ``postgresql://`` DSN (table shadow_records) or a JSONL file of records.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from collections import Counter
from pathlib import Path

import orjson

from gateway.shadow.errors import ShadowError

__all__ = ["evaluate_command", "register", "shadow_training_file"]


def _guarded(func, args: argparse.Namespace) -> int:
    try:
        return func(args)
    except (ShadowError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def register(subparsers: argparse._SubParsersAction) -> None:
    sh = subparsers.add_parser("shadow", help="shadow-evaluation records: calibrate, export")
    sub = sh.add_subparsers(dest="shadow_command", required=True)
    c = sub.add_parser("calibrate", help="cascade threshold that best separates losses")
    c.add_argument("--data", required=True, help="postgresql:// DSN or records JSONL")
    c.set_defaults(func=functools.partial(_guarded, _calibrate))
    e = sub.add_parser("export", help="records with prompt text -> request log for simulate")
    e.add_argument("--data", required=True)
    e.add_argument("--out", type=Path, required=True)
    e.set_defaults(func=functools.partial(_guarded, _export))
    s = sub.add_parser("summary", help="win/tie/loss per rule and per difficulty decile")
    s.add_argument("--data", required=True)
    s.set_defaults(func=functools.partial(_guarded, _summary))


def register_evaluate(router_sub: argparse._SubParsersAction) -> None:
    """``gateway router evaluate`` (registered by gateway.router.cli)."""
    from gateway.router.shadow_labels import DEFAULT_HOLDOUT

    v = router_sub.add_parser(
        "evaluate", help="RouteLLM metrics of a candidate vs the current router on shadow records"
    )
    v.add_argument("--model", required=True, help="candidate artefact directory")
    v.add_argument("--data", required=True, help="postgresql:// DSN or records JSONL")
    v.add_argument("--current", default=None, help="current artefact (default: the built-in)")
    v.add_argument("--holdout", type=float, default=DEFAULT_HOLDOUT, help="held-back share")
    v.add_argument(
        "--all", action="store_true", help="score every judged record, not only the held-back"
    )
    v.set_defaults(func=functools.partial(_guarded, evaluate_command))


def shadow_training_file(source: str, holdout: float, extra: Path | None) -> tuple[Path, str]:
    """A training JSONL of the non-held-back judged records with text (after ``extra``'s
    lines when given); returns (path, one-line summary)."""
    from gateway.router.shadow_labels import judged, split, training_lines
    from gateway.shadow.store import read_records

    records = read_records(source)
    good = judged(records)
    train, test = split(good, holdout)
    lines = training_lines(train)
    no_text = sum(1 for r in train if not r.prompt)
    if not lines:
        raise ShadowError(
            f"{source}: no usable training records ({len(records)} records, {len(good)} judged,"
            f" {no_text} without prompt text: set shadow.store.prompts: true to train on them)"
        )
    out = Path(tempfile.mkstemp(prefix="shadow-train-", suffix=".jsonl")[1])
    with out.open("wb") as f:
        if extra is not None:
            f.write(extra.read_bytes().rstrip(b"\n") + b"\n")
        for line in lines:
            f.write(orjson.dumps(line) + b"\n")
    losses = sum(1 for x in lines if x["label"])
    summary = (
        f"shadow records: {len(records)}, judged {len(good)}, held back {len(test)}"
        f" (--holdout {holdout:g}), training on {len(lines)} ({losses} losses)"
        + (f", {no_text} skipped without prompt text" if no_text else "")
    )
    return out, summary


def evaluate_command(args: argparse.Namespace) -> int:
    from gateway.router import artifact
    from gateway.router.shadow_labels import judged, qualities, split
    from gateway.shadow.report import format_table, random_router, score_router
    from gateway.shadow.store import read_records

    records = judged(read_records(args.data))
    test = records if args.all else split(records, args.holdout)[1]
    with_text = [r for r in test if r.prompt]
    print(
        f"{len(records)} judged records; evaluating on {len(test)}"
        f" {'(all)' if args.all else f'held back (--holdout {args.holdout:g})'},"
        f" {len(with_text)} with prompt text"
    )
    if not test:
        raise ShadowError("no records to evaluate on (collect more, or pass --all)")
    weak, strong = (sum(q) / len(test) for q in zip(*map(qualities, test), strict=True))
    print(f"mean judged quality: self-hosted {weak:.3f}, reference {strong:.3f}")
    if strong <= weak:
        print("the reference is not better than the self-hosted model on these records:")
        print("keeping everything local loses no quality here; no router can gain any")
        return 0
    rows = []
    if with_text:
        prompts = [r.prompt for r in with_text if r.prompt]
        cand = artifact.load(args.model)
        cur = artifact.load(args.current)
        rows.append(score_router(f"candidate ({args.model})", cand.predict(prompts), with_text))
        rows.append(
            score_router(f"current ({args.current or 'built-in'})", cur.predict(prompts), with_text)
        )
        rows.append(random_router(with_text))
    routed = [r for r in test if r.difficulty is not None]
    if routed:
        rows.append(
            score_router(
                "as routed (scores at request time)",
                [r.difficulty for r in routed if r.difficulty is not None],
                routed,
            )
        )
    if not rows:
        raise ShadowError("the records carry neither prompt text nor request-time scores")
    print(format_table(rows))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from gateway.cascade.calibrate import calibrate_threshold
    from gateway.shadow.store import read_records

    cal = calibrate_threshold(read_records(args.data))
    print(
        f"min_confidence: {cal.threshold:.4f}   (records {cal.n}, losses {cal.losses};"
        f" below it: {cal.losses_caught} losses caught, {cal.others_escalated} wins/ties"
        f" escalated, {cal.escalated_share:.1%} escalated; Youden J {cal.j:.3f})"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from gateway.shadow.export import to_log_line
    from gateway.shadow.store import read_records

    n = skipped = 0
    with args.out.open("wb") as f:
        for r in read_records(args.data):
            line = to_log_line(r)
            if line is None:
                skipped += 1
                continue
            f.write(orjson.dumps(line) + b"\n")
            n += 1
    print(f"wrote {n} requests to {args.out}; {skipped} records without prompt text skipped")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from gateway.shadow.metrics import difficulty_decile
    from gateway.shadow.store import read_records

    records = read_records(args.data)
    by_rule: dict[str, Counter] = {}
    by_decile: dict[str, Counter] = {}
    for r in records:
        if r.outcome is None:
            continue
        by_rule.setdefault(f"{r.virtual_model}/{r.rule}", Counter())[r.outcome] += 1
        by_decile.setdefault(difficulty_decile(r.difficulty), Counter())[r.outcome] += 1
    print(f"{len(records)} records, {sum(1 for r in records if r.outcome)} judged")
    for title, table in (("rule", by_rule), ("difficulty decile", by_decile)):
        print(f"\n{title:<28}{'win':>6}{'tie':>6}{'loss':>6}  quality kept local")
        for key in sorted(table):
            c = table[key]
            n = c["win"] + c["tie"] + c["loss"]
            kept = (c["win"] + c["tie"]) / n
            print(f"{key:<28}{c['win']:>6}{c['tie']:>6}{c['loss']:>6}  {kept:.1%}")
    return 0
