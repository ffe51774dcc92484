"""`gateway simulate` as a user runs it: a subprocess on the shipped sample log and policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "policies" / "sample-requests.jsonl"


def _gateway(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "simulate", *args],
        cwd=ROOT,
        env=base | (env or {}),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sample_log_end_to_end(tmp_path):
    html, out = tmp_path / "report.html", tmp_path / "report.json"
    p = _gateway(
        "--policy",
        "policies/default.yaml",
        "--requests",
        str(SAMPLE),
        "--html",
        str(html),
        "--json",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    for want in (
        "Per backend",
        "Per rule",
        "all on gpt-4o (baseline)",
        "per month",
        "Cost-quality curve",
        "treated as enabled",
    ):
        assert want in p.stdout
    data = json.loads(out.read_text())
    lines = sum(1 for x in SAMPLE.read_text().splitlines() if x.strip())
    assert data["requests"] == lines
    assert data["routed"] + data["error_count"] == lines
    assert sum(g["requests"] for g in data["by_backend"]) == data["routed"]
    shares = {g["name"]: g["request_share"] for g in data["by_backend"]}
    assert (
        0 < shares["openai"] < 0.5 < shares["local"]
    )  # the default policy keeps most traffic home
    assert 0 < data["savings_share"] < 1 and data["per_month"]["savings_usd"] > 0
    assert data["curve"]["requests"] > 300
    assert html.read_text().count("<svg") == 5


def test_bad_input_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model": "auto", "messages": []}\n{oops\n')
    p = _gateway("--requests", str(bad))
    assert p.returncode == 2
    assert f"{bad}:2: not valid JSON" in p.stderr and "Traceback" not in p.stderr


def test_cli_errors_in_process(tmp_path, capsys):
    from gateway.cli import main

    assert (
        main(["simulate", "--requests", str(SAMPLE), "--policy", str(tmp_path / "none.yaml")]) == 2
    )
    assert "cannot read policy" in capsys.readouterr().err
    assert main(["simulate", "--requests", str(SAMPLE), "--requests-per-day", "0"]) == 2
    assert "--requests-per-day must be > 0" in capsys.readouterr().err
