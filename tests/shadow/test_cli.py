"""`gateway router train --from-shadow`, `router evaluate`, `shadow calibrate|export|summary`,
and `gateway simulate` on shadow records: real CLI entry points on records files."""

from __future__ import annotations

import random
from pathlib import Path

import orjson

from gateway.cli import main as gateway_main
from gateway.shadow.export import to_log_line
from gateway.simulate.log import parse_line
from tests.shadow.records_factory import record

ROOT = Path(__file__).resolve().parents[2]

EASY = ["hi", "thanks!", "good morning", "hello there", "see you", "nice one", "cheers", "ok"]
HARD = [
    "Prove that the sum of the first {n} odd numbers is a square, step by step, and derive the "
    "closed form; then compute the integral of x^{n} from 0 to {n} and explain each step.",
    "Implement a function in Python that solves the {n}-queens problem with backtracking, "
    "analyse its complexity, and explain why the pruning is correct.",
]


def _records(path: Path, n: int = 120) -> list:
    rng = random.Random(7)
    recs = []
    for i in range(n):
        hard = i % 3 != 0  # two thirds hard: the reference is better on average
        text = rng.choice(HARD).format(n=i) if hard else f"{rng.choice(EASY)} #{i}"
        lost = hard if rng.random() < 0.9 else not hard  # 10% label noise
        conf = (-2.5 if lost else -0.3) + rng.uniform(-0.2, 0.2)
        recs.append(record(text, "loss" if lost else "win", confidence=conf, difficulty=None))
    path.write_bytes(b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in recs))
    return recs


def test_train_from_shadow_then_evaluate_against_current(tmp_path, capsys):
    data = tmp_path / "records.jsonl"
    _records(data)
    out = tmp_path / "candidate"
    args = ["router", "train", "--from-shadow", str(data), "--out", str(out), "--embedding", "none"]
    assert gateway_main(args) == 0
    printed = capsys.readouterr().out
    assert "shadow records: 120, judged 120, held back" in printed
    assert (out / "router.json").exists()
    assert gateway_main(["router", "evaluate", "--model", str(out), "--data", str(data)]) == 0
    table = capsys.readouterr().out
    lines = {ln.split("  ")[0]: ln.split() for ln in table.splitlines()}
    assert "held back (--holdout 0.2)" in table and "mean judged quality" in table
    cand = next(v for k, v in lines.items() if k.startswith("candidate"))
    rand = next(v for k, v in lines.items() if k.startswith("random"))
    assert float(cand[-3]) > 0.7 > float(rand[-3]) == 0.5  # APGR: learnt from the records
    assert any(k.startswith("current (built-in)") for k in lines)


def test_train_from_shadow_refuses_records_without_text(tmp_path, capsys):
    data = tmp_path / "records.jsonl"
    recs = [record(f"p{i}", "loss" if i % 2 else "win", prompt=None) for i in range(30)]
    data.write_bytes(b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in recs))
    args = ["router", "train", "--from-shadow", str(data), "--out", str(tmp_path / "m")]
    assert gateway_main(args) == 2
    assert "shadow.store.prompts: true" in capsys.readouterr().err


def test_calibrate_summary_export_and_simulate(tmp_path, capsys):
    data = tmp_path / "records.jsonl"
    _records(data, n=60)
    assert gateway_main(["shadow", "calibrate", "--data", str(data)]) == 0
    line = capsys.readouterr().out
    assert line.startswith("min_confidence:")
    threshold = float(line.split()[1])
    assert -2.3 < threshold < -0.5  # between the losses' and the wins' confidences
    assert gateway_main(["shadow", "summary", "--data", str(data)]) == 0
    assert "quality kept local" in capsys.readouterr().out
    log = tmp_path / "log.jsonl"
    assert gateway_main(["shadow", "export", "--data", str(data), "--out", str(log)]) == 0
    first = orjson.loads(log.read_bytes().splitlines()[0])
    assert first["request"]["model"] == "auto" and set(first["label"]) == {
        "weak_score",
        "strong_score",
    }
    policy = str(ROOT / "policies" / "default.yaml")
    for requests in (log, data):  # the exported log, and the records file itself
        assert gateway_main(["simulate", "--policy", policy, "--requests", str(requests)]) == 0
        report = capsys.readouterr().out
        assert "60" in report and "quality" in report.lower()


def test_evaluate_when_the_reference_is_not_better(tmp_path, capsys):
    data = tmp_path / "records.jsonl"
    recs = [record(f"p{i}", "win") for i in range(10)]
    data.write_bytes(b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in recs))
    args = ["router", "evaluate", "--model", "unused", "--data", str(data), "--all"]
    assert gateway_main(args) == 0
    assert "no router can gain any" in capsys.readouterr().out


def test_a_records_cache_counts_reach_the_simulators_log_line():
    """Local usage with prompt-cache reads and writes becomes the chat usage the simulator
    prices them from (and a record without them stays plain)."""
    tokens = {"prompt_tokens": 90, "completion_tokens": 7, "cached_tokens": 64}
    line = to_log_line(record("hi", "win", local_tokens=tokens | {"cache_write_tokens": 16}))
    assert line is not None
    got = parse_line(line, 1)
    assert (got.prompt_tokens, got.completion_tokens) == (90, 7)
    assert (got.cached_tokens, got.cache_write_tokens) == (64, 16)
    plain = to_log_line(
        record("hi", "win", local_tokens={"prompt_tokens": 5, "completion_tokens": 1})
    )
    assert plain is not None and plain["usage"] == {"prompt_tokens": 5, "completion_tokens": 1}
