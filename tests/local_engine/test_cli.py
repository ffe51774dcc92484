"""``local-engine`` command line: help texts a newcomer can read, --version, the start-up log,
and a bad model refused in one line before a port is bound."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from local_engine.cli import build_parser, main
from local_engine.config import EngineConfig
from local_engine.engine.llm_engine import LLMEngine


def _serve_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["serve"]


def test_help_is_plain_text_and_every_serve_flag_is_explained() -> None:
    top = build_parser().format_help()
    assert "``" not in top and "serve" in top
    serve = _serve_parser()
    unexplained = [a.option_strings[0] for a in serve._actions if a.option_strings and not a.help]
    assert unexplained == []
    text = serve.format_help()
    assert "(default: 8000)" in text and "(default: 127.0.0.1)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "seed for requests that set none (default: 0)" in " ".join(text.split())


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("local-engine ")


def test_bad_model_is_one_line_error_before_binding(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF but not really")
    proc = subprocess.run(
        [sys.executable, "-m", "local_engine.cli", "serve", "--model", str(bad), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("local-engine: error: cannot read")
    assert "Traceback" not in proc.stderr and "Uvicorn running" not in proc.stderr


def test_start_up_log_says_device_dtype_kv_blocks_and_max_length(
    tiny_checkpoint: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    model = tiny_checkpoint("qwen2")
    with caplog.at_level(logging.INFO, logger="local_engine"):
        LLMEngine(EngineConfig(model=str(model), device="cpu", num_kv_blocks=40, block_size=8))
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model ")]
    assert f"model {model.name}:" in line
    for part in (
        "on cpu",
        "dtype float32, linear weights float32 (auto: not a GGUF model)",
        "KV cache 40 blocks x 8 tokens = 320 tokens",
        "max_model_len 320",
        "prefix caching on",
    ):
        assert part in line, line


def test_gil_switch_interval_flag_default_range_and_effect() -> None:
    from local_engine.cli import DEFAULT_GIL_SWITCH_MS, apply_gil_switch

    serve = _serve_parser()
    assert serve.parse_args(["--model", "demo"]).gil_switch_ms == DEFAULT_GIL_SWITCH_MS == 5.0
    assert serve.parse_args(["--model", "demo", "--gil-switch-ms", "2"]).gil_switch_ms == 2.0
    for bad in ("0", "-1", "nan"):
        with pytest.raises(SystemExit):
            serve.parse_args(["--model", "demo", "--gil-switch-ms", bad])
    before = sys.getswitchinterval()
    try:
        apply_gil_switch(0.5)
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        sys.setswitchinterval(before)


def test_omp_spin_count_flag_environment_and_default() -> None:
    from local_engine.cli import DEFAULT_OMP_SPIN_COUNT, omp_spin_count_setting

    serve = _serve_parser()
    assert serve.parse_args(["--model", "demo"]).omp_spin_count is None
    assert serve.parse_args(["--model", "demo", "--omp-spin-count", "0"]).omp_spin_count == 0
    for bad in ("-1", "x"):
        with pytest.raises(SystemExit):
            serve.parse_args(["--model", "demo", "--omp-spin-count", bad])
    assert DEFAULT_OMP_SPIN_COUNT == 20_000
    assert omp_spin_count_setting(None, {}) == ("20000", "OpenMP spin count 20000 (GOMP_SPINCOUNT)")
    # the operator's own setting stays, and is what the log says
    assert omp_spin_count_setting(None, {"GOMP_SPINCOUNT": "50000"}) == (
        None,
        "OpenMP spin-wait from the environment: GOMP_SPINCOUNT=50000",
    )
    assert omp_spin_count_setting(None, {"OMP_WAIT_POLICY": "passive"})[0] is None
    # the flag wins over the environment
    assert omp_spin_count_setting(7, {"GOMP_SPINCOUNT": "50000"})[0] == "7"


def test_omp_spin_count_is_refused_once_torch_is_loaded(monkeypatch, caplog) -> None:
    import torch  # noqa: F401 - loaded, as it is in this test process

    from local_engine import cli

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    with caplog.at_level(logging.WARNING, logger="local_engine"):
        line = cli.apply_omp_spin_count(100)
    assert "not applied" in line and "GOMP_SPINCOUNT" not in os.environ
    assert any("not applied" in r.getMessage() for r in caplog.records)


def test_serve_sets_the_spin_count_before_torch_loads() -> None:
    """GNU OpenMP reads GOMP_SPINCOUNT once, when torch loads it: `serve` must get there first."""
    code = (
        "import sys, local_engine.cli as cli\n"
        "assert 'torch' not in sys.modules, 'importing the CLI loaded torch'\n"
        "calls = []\n"
        "real = cli.apply_omp_spin_count\n"
        "def spy(count):\n"
        "    calls.append('torch' in sys.modules)\n"
        "    return real(count)\n"
        "cli.apply_omp_spin_count = spy\n"
        "rc = cli.main(['serve', '--model', '/nonexistent/model-dir', '--log-level', 'error'])\n"
        "assert calls == [False], calls\n"
        "import os; print(rc, os.environ['GOMP_SPINCOUNT'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "20000"]
