"""Build policies/sample-requests.jsonl: a realistic day of traffic for `gateway simulate`.

Prompts and outcome labels come from the test splits of shared/data/routing (RouterBench
ARC-Challenge, MBPP, Winogrande; AlpacaEval instructions), so the sample's cost-quality curve
is measured on prompts the shipped router was not trained on. Around them: chat bodies as
clients send them (system prompts, multi-turn histories, tools, streaming, small images, long
documents), teams, confidential requests, timestamps over one day with a daytime peak, and
token usage. Deterministic (fixed seed): rerunning gives the same file.

    python bench/make_sample_log.py [--data ../shared/data/routing] [--out policies/sample-requests.jsonl]
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.router.shared_data import ALPACA_EVAL_WEAK, Example, load_split

SEED = 20250501
DAY = datetime(2025, 5, 1, tzinfo=UTC)
COUNTS = {"arc_challenge": 110, "winograde": 70, "mbpp": 60, "alpacaeval": 170}
IMAGES, LONG_DOCS, MEDIUM_DOCS = 12, 2, 3
TEAMS = ("support", "engineering", "research", "marketing", "legal")
CONFIDENTIAL_SHARE = 0.08
FEW_SHOT_SHARE = 0.3  # multiple-choice prompts sent with their few-shot examples
CHARS_PER_TOKEN = 3.8  # what the sample's "real" usage counts assume
# 1x1 PNG: keeps the sample small while exercising the vision rule
TINY_PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
SYSTEM = {
    "support": "You are a friendly support assistant for Acme Cloud. Answer briefly.",
    "engineering": "You are a senior software engineer. Be precise.",
    "research": "You are a careful research assistant.",
    "marketing": "You write clear, upbeat marketing copy.",
    "legal": "You are an assistant for the legal team. Never speculate.",
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_docs",
            "description": "Search the internal knowledge base",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    }
]
IMAGE_ASKS = (
    "What does this chart show?",
    "Describe this screenshot of the error.",
    "Read the numbers off this receipt.",
)


def _timestamp(rng: random.Random) -> str:
    """A time of day with a business-hours peak (UTC 07:00-19:00 twice as busy)."""
    while True:
        s = rng.uniform(0, 86400)
        if 7 * 3600 <= s <= 19 * 3600 or rng.random() < 0.5:
            return (DAY + timedelta(seconds=int(s))).isoformat().replace("+00:00", "Z")


def _tokens(text: str) -> int:
    return max(1, round(len(text) / CHARS_PER_TOKEN))


def _question(prompt: str, rng: random.Random) -> str:
    """Multiple-choice prompts carry few-shot examples; most clients send just the question."""
    if rng.random() < FEW_SHOT_SHARE:
        return prompt
    return prompt.rsplit("\n\n", 1)[-1]


def _label(e: Example) -> dict[str, float]:
    return {"weak_score": round(e.weak_quality, 4), "strong_score": round(e.strong_quality, 4)}


def _answers(data: Path) -> dict[str, str]:
    """AlpacaEval instruction -> the weak model's real answer (for histories and usage)."""
    rows = json.loads((data / f"alpacaeval_{ALPACA_EVAL_WEAK}_vs_gpt4_turbo.json").read_text())
    return {r["instruction"]: r["output_2"] for r in rows}


def _line(
    rng: random.Random, team: str, messages: list, *, label=None, completion: int, **body
) -> dict:
    req = {"model": "auto", "messages": messages, **body}
    prompt = sum(
        _tokens(m["content"]) if isinstance(m["content"], str) else 85 + 10 for m in messages
    ) + 4 * len(messages)
    out: dict = {"request": req, "team": team, "timestamp": _timestamp(rng)}
    if team == "legal" or rng.random() < CONFIDENTIAL_SHARE:
        out["headers"] = {"x-data-classification": "confidential"}
    out["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion}
    if label is not None:
        out["label"] = label
    return out


def _chat(rng: random.Random, team: str, user: str) -> list[dict]:
    msgs = [{"role": "system", "content": SYSTEM[team]}] if rng.random() < 0.6 else []
    return msgs + [{"role": "user", "content": user}]


def build(data: Path) -> list[dict]:
    rng = random.Random(SEED)
    split = load_split(data, "test")
    answers = _answers(data)
    lines: list[dict] = []
    for e in rng.sample(split["arc_challenge"], COUNTS["arc_challenge"]) + rng.sample(
        split["winograde"], COUNTS["winograde"]
    ):
        team = rng.choice(("support", "research", "marketing"))
        lines.append(
            _line(
                rng,
                team,
                _chat(rng, team, _question(e.prompt, rng)),
                label=_label(e),
                completion=rng.randint(1, 40),
                temperature=0,
                max_tokens=64,
            )
        )
    for e in rng.sample(split["mbpp"], COUNTS["mbpp"]):
        team = "engineering"
        lines.append(
            _line(
                rng,
                team,
                _chat(rng, team, e.prompt),
                label=_label(e),
                completion=rng.randint(80, 450),
                max_tokens=1024,
                stream=rng.random() < 0.5,
            )
        )
    alpaca = rng.sample(split["alpacaeval"], COUNTS["alpacaeval"])
    for i, e in enumerate(alpaca):
        team = rng.choice(TEAMS)
        msgs = _chat(rng, team, e.prompt)
        if i % 6 == 0:  # a follow-up in a longer conversation: an earlier turn and its answer first
            prev = rng.choice(list(answers))
            msgs[-1:-1] = [
                {"role": "user", "content": prev},
                {"role": "assistant", "content": answers[prev][:1500]},
            ]
        extra = {"tools": TOOLS, "tool_choice": "auto"} if i % 10 == 3 else {}
        completion = _tokens(answers.get(e.prompt, "x" * 1200))
        lines.append(
            _line(
                rng,
                team,
                msgs,
                label=_label(e),
                completion=completion,
                stream=rng.random() < 0.6,
                **extra,
            )
        )
    for i in range(IMAGES):
        team = rng.choice(("support", "marketing"))
        content = [
            {"type": "text", "text": IMAGE_ASKS[i % len(IMAGE_ASKS)]},
            {"type": "image_url", "image_url": {"url": TINY_PNG}},
        ]
        lines.append(
            _line(
                rng,
                team,
                [{"role": "user", "content": content}],
                completion=rng.randint(60, 250),
                max_tokens=512,
            )
        )
    corpus = [a for a in answers.values() if len(a) > 400]
    for size, n in (
        (130_000, LONG_DOCS),
        (30_000, MEDIUM_DOCS),
    ):  # over / well under the local 32k window
        for _ in range(n):
            team = rng.choice(("research", "legal", "support"))
            doc, parts = "", rng.sample(corpus, len(corpus))
            while len(doc) < size:
                doc += parts.pop() + "\n\n"
            msgs = _chat(
                rng,
                team,
                f"Summarize the key points of this document in five bullets.\n\n{doc[:size]}",
            )
            lines.append(_line(rng, team, msgs, completion=rng.randint(150, 400), max_tokens=800))
    lines.sort(key=lambda x: x["timestamp"])
    return lines


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=root.parent / "shared" / "data" / "routing")
    ap.add_argument("--out", type=Path, default=root / "policies" / "sample-requests.jsonl")
    args = ap.parse_args()
    lines = build(args.data)
    with args.out.open("w", encoding="utf-8") as f:
        for x in lines:
            f.write(json.dumps(x, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {len(lines)} requests, {args.out.stat().st_size / 1e6:.2f} MB, to {args.out}")


if __name__ == "__main__":
    main()
