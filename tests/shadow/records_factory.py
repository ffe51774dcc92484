"""Build shadow records for tests (what a gateway would have written)."""

from __future__ import annotations

import time

from gateway.shadow.records import ShadowRecord, prompt_hash


def record(text: str, outcome: str | None, **over) -> ShadowRecord:
    prompt = [{"role": "user", "content": text}]
    share = {"win": 1.0, "tie": 0.5, "loss": 0.0}.get(outcome or "", None)
    fields = dict(
        id=prompt_hash(prompt)[:16],
        time=time.time(),
        team="default",
        key_name=None,
        virtual_model="auto",
        rule="everyday",
        difficulty=0.3,
        local_backend="local",
        reference_backend="openai",
        judge_backend="openai",
        judge_mode="pairwise",
        local_score=share,
        reference_score=None if share is None else 1.0 - share,
        outcome=outcome,
        prompt_sha256=prompt_hash(prompt),
        prompt=prompt,
    )
    fields.update(over)
    return ShadowRecord(**fields)
