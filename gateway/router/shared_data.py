"""Readers for the public routing outcomes in shared/data/routing/ (see its README.md).

Each prompt becomes an ``Example``: its text, a soft training target (probability that an
open model's answer is clearly worse than GPT-4's), and the weak/strong quality used by the
RouteLLM metrics (weak = Mixtral-8x7B, strong = GPT-4 Turbo, as in the held-out evaluation).
"""

from __future__ import annotations

import ast
import csv
import json
from dataclasses import dataclass
from pathlib import Path

from gateway.router.errors import TrainingDataError

ROUTERBENCH_TASKS = ("arc_challenge", "mbpp", "winograde")
ALPACA_MODELS = (
    "FuseChat-Qwen-2.5-7B-Instruct",
    "Mixtral-8x7B-Instruct-v0.1_concise",
    "gpt-3.5-turbo-1106",
)
ALPACA_EVAL_WEAK = "Mixtral-8x7B-Instruct-v0.1_concise"
_STRONG = "gpt-4-1106-preview"
_WEAK = "mistralai/mixtral-8x7b-chat"
# open models whose failures (where GPT-4 succeeds) average into the soft training target
_OPEN = (
    "mistralai/mixtral-8x7b-chat",
    "meta/llama-2-70b-chat",
    "mistralai/mistral-7b-chat",
    "zero-one-ai/Yi-34B-Chat",
    "WizardLM/WizardLM-13B-V1.2",
)


@dataclass(frozen=True, slots=True)
class Example:
    source: str
    prompt: str
    target: float  # P(strong needed), soft, in [0, 1]
    weak_quality: float
    strong_quality: float


def _unwrap(prompt: str) -> str:
    """RouterBench stores prompts as a Python list's repr (``"['...']"``); join its parts."""
    if prompt.startswith("[") and prompt.endswith("]"):
        try:
            parts = ast.literal_eval(prompt)
        except (ValueError, SyntaxError):
            return prompt
        if isinstance(parts, list) and all(isinstance(p, str) for p in parts):
            return "\n".join(parts)
    return prompt


def load_routerbench(root: Path, task: str, split: str) -> list[Example]:
    path = root / f"routerbench_{task}_{split}.csv"
    csv.field_size_limit(1 << 30)
    out: list[Example] = []
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if row[_WEAK] == "" or row[_STRONG] == "":
                    continue  # a few ARC rows lack outcomes
                strong = float(row[_STRONG])
                fails = [float(row[m]) < strong for m in _OPEN if row.get(m, "") != ""]
                out.append(
                    Example(
                        source=task,
                        prompt=_unwrap(row["prompt"]),
                        target=sum(fails) / len(fails),
                        weak_quality=float(row[_WEAK]),
                        strong_quality=strong,
                    )
                )
    except (OSError, KeyError) as exc:
        raise TrainingDataError(f"{path}: {exc!r}") from exc
    return out


def load_alpacaeval(root: Path) -> list[Example]:
    """One Example per instruction. preference: 1 = GPT-4 Turbo preferred, 2 = the other model.

    Target: mean over the three open/cheap models of (2 - preference); quality for metrics:
    win probability of the routed model against the other, with Mixtral as the weak model.
    """
    prefs: dict[str, list[float]] = {}
    weak_pref: dict[str, float] = {}
    order: list[str] = []
    for model in ALPACA_MODELS:
        path = root / f"alpacaeval_{model}_vs_gpt4_turbo.json"
        try:
            rows = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise TrainingDataError(f"{path}: {exc}") from exc
        for r in rows:
            if r.get("preference") is None:
                continue
            text = r["instruction"]
            if text not in prefs:
                prefs[text] = []
                order.append(text)
            p = min(max(float(r["preference"]), 1.0), 2.0)
            prefs[text].append(2.0 - p)
            if model == ALPACA_EVAL_WEAK:
                weak_pref[text] = p
    return [
        Example(
            source="alpacaeval",
            prompt=t,
            target=sum(prefs[t]) / len(prefs[t]),
            weak_quality=weak_pref[t] - 1.0,
            strong_quality=2.0 - weak_pref[t],
        )
        for t in order
        if t in weak_pref
    ]


def alpaca_split(examples: list[Example], split: str) -> list[Example]:
    """AlpacaEval ships no split: a stable 70/30 split by a hash of the instruction."""
    import hashlib

    def is_test(e: Example) -> bool:
        return hashlib.sha256(e.prompt.encode()).digest()[0] < 77  # ~30%

    return [e for e in examples if is_test(e) == (split == "test")]


def load_split(root: Path, split: str) -> dict[str, list[Example]]:
    """All sources' ``split`` ('train' or 'test'), keyed by source name."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    out = {t: load_routerbench(root, t, split) for t in ROUTERBENCH_TASKS}
    out["alpacaeval"] = alpaca_split(load_alpacaeval(root), split)
    return out
