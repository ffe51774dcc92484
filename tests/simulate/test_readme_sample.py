"""The README's simulator sample output is what the simulator prints today."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("readme_sample", ROOT / "bench/readme_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_readme_sample_output_is_current():
    script = _script()
    assert script.readme_block() == script.sample_block(), (
        "README.md's simulator sample is stale: run `python bench/readme_sample.py --write`"
    )


@pytest.mark.slow
def test_progress_bars_keep_clear_of_log_lines_and_the_table():
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "simulate",
            "policies/default.yaml",
            "--requests",
            "policies/sample-requests.jsonl",
            "--progress",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "scoring" in p.stderr  # the bar ran
    # a log line printed while a bar is up starts on a cleared line, never glued to the bar
    assert not re.search(r"req/s\]\d{4}-\d\d-\d\d", p.stderr), p.stderr[:500]
    assert "INFO gateway.runtime" in p.stderr
    assert p.stdout.startswith("Savings simulation")  # the table, untouched by bars
