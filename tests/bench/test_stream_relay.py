"""bench/stream_relay.py measures the real stream classes on the mock upstream's own answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "stream_relay.py"


def test_a_short_paired_run_relays_every_kind_and_reports_ratios(tmp_path):
    out = tmp_path / "relay.json"
    args = ["--baseline", str(ROOT), "--rounds", "1", "--answers", "3", "--repeats", "1"]
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    rows = json.loads(out.read_text())["rounds"]
    assert [r["kind"] for r in rows] == ["chat", "messages", "responses"]
    # the worker checked that each answer went through whole (chat: role, 8 pieces, stop,
    # usage, [DONE])
    assert rows[0]["events"] == 12 and all(r["events"] > 8 for r in rows)
    assert all(r["tree_us"] > 0 and r["baseline_us"] > 0 and r["x_baseline"] > 0 for r in rows)
    for kind in ("chat", "messages", "responses"):
        assert f"{kind}: " in run.stdout and " vs baseline " in run.stdout
