import json
import subprocess
import sys

import pytest

from gateway.cli import main as gateway_main
from gateway.router import artifact


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gateway_router_score_and_train(tmp_path, synthetic_rows, capsys):
    data = _jsonl(tmp_path / "train.jsonl", synthetic_rows)
    out_dir = tmp_path / "m"
    args = ["router", "train", "--data", str(data), "--out", str(out_dir)]
    assert gateway_main(args + ["--embedding", "none"]) == 0  # other inputs: from scratch
    assert json.loads((out_dir / "router.json").read_text())["config"]["embedding"] == "none"
    bad = gateway_main(args + ["--embedding", "none", "--prior", "builtin"])
    assert bad == 2 and "other inputs than the prior" in capsys.readouterr().err
    assert (out_dir / "router.json").exists()
    inp = _jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": 1, "prompt": "hi"},
            {
                "id": "x",
                "prompt": [{"role": "user", "content": "Prove that 2+2=4 formally, step by step."}],
            },
        ],
    )
    out = tmp_path / "out.jsonl"
    for model in (None, str(out_dir)):
        args = ["router", "score", "--input", str(inp), "--output", str(out)] + (
            ["--model", model] if model else []
        )
        assert gateway_main(args) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["id"] for r in rows] == [1, "x"]
        assert all(0 <= r["score"] <= 1 for r in rows) and rows[1]["score"] > rows[0]["score"]


def test_train_defaults_to_the_shipped_router_as_prior_and_takes_every_label_kind(
    tmp_path, synthetic_rows
):
    rows = [
        {"prompt": r["prompt"], "source": r["source"], "outcomes": {"my-7b": 1 - r["label"]}}
        if i % 3 == 0
        else {"prompt": r["prompt"], "source": r["source"], "strong_preferred": r["label"]}
        if i % 3 == 1
        else r
        for i, r in enumerate(synthetic_rows)
    ]
    data = _jsonl(tmp_path / "train.jsonl", rows)
    out_dir = tmp_path / "m"
    assert gateway_main(["router", "train", "--data", str(data), "--out", str(out_dir)]) == 0
    doc = json.loads((out_dir / "router.json").read_text())
    shipped = json.loads(artifact.resolve(None).read_text())
    assert doc["config"] == {**shipped["config"], "l2": 0.1} and doc["mean"] == shipped["mean"]
    arms = doc["meta"]["arm_offsets"]
    assert {"b|fails:my-7b", "a|loses_to_strong:self-hosted", "a|needs_strong"} <= set(arms)


def test_build_default_needs_the_shared_folder(tmp_path, capsys):
    assert (
        gateway_main(
            ["router", "build-default", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
        )
        == 2
    )
    assert "routerbench_arc_challenge_train.csv" in capsys.readouterr().err


def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "prompt": "a"}\n{"id": 2}\n')
    assert (
        gateway_main(["router", "score", "--input", str(bad), "--output", str(tmp_path / "o")]) == 2
    )
    assert f"{bad}:2: missing 'prompt'" in capsys.readouterr().err
    assert (
        gateway_main(
            [
                "router",
                "score",
                "--input",
                str(bad),
                "--output",
                str(tmp_path / "o"),
                "--model",
                str(tmp_path),
            ]
        )
        == 2
    )


@pytest.mark.slow
def test_module_entry_point_runs_offline(tmp_path):
    inp = _jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"question {i}?"} for i in range(3)])
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.router.cli",
            "router",
            "score",
            "--input",
            str(inp),
            "--output",
            str(tmp_path / "o.jsonl"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 3
