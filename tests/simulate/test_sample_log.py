"""The shipped sample log: small, valid, and covering what a newcomer's traffic has."""

from __future__ import annotations

from pathlib import Path

from gateway.simulate import read_log

SAMPLE = Path(__file__).resolve().parents[2] / "policies" / "sample-requests.jsonl"


def test_sample_log_is_small_valid_and_varied():
    assert SAMPLE.stat().st_size < 1_000_000
    reqs = read_log(SAMPLE)
    assert 300 <= len(reqs) <= 600
    bodies = [r.body for r in reqs]
    assert any(b.get("tools") for b in bodies)
    assert any(isinstance(m.get("content"), list) for b in bodies for m in b["messages"])  # images
    assert any(len(str(b["messages"])) > 120_000 for b in bodies)  # over the local context window
    assert any(b.get("stream") for b in bodies)
    assert any(r.headers.get("x-data-classification") == "confidential" for r in reqs)
    assert len({r.team for r in reqs}) >= 4
    assert all(r.timestamp is not None and r.prompt_tokens is not None for r in reqs)
    assert max(r.timestamp for r in reqs) - min(r.timestamp for r in reqs) > 20 * 3600
    assert sum(r.label is not None for r in reqs) > 300
