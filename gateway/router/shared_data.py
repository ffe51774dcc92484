"""Readers for the public routing outcomes in shared/data/routing/ (see its README.md).

``sources(root)``: every source as a ``Source`` of ``LabelledPrompt``s (what the trainer
reads: one observation per model outcome) plus the weak/strong quality the RouteLLM metrics
need. Sixteen sources, each one benchmark or one sub-collection:

    routerbench/{arc_challenge,mbpp,winograde}   weak-vs-strong outcomes of 11 models (0/1)
    alpacaeval/{selfinstruct,oasst,koala,helpful_base,vicuna}
                                                 GPT-4 Turbo judge preferences, 3 models
    open7/{MATH_prealgebra,arc_easy,arc_challenge,humaneval,javascript,mbpp,ceval,cmmlu}
                                                 0/1 outcomes of seven open 7-8B models

Metric qualities: RouterBench weak = Mixtral-8x7B, strong = GPT-4 Turbo; AlpacaEval weak =
Mixtral-8x7B (concise) vs GPT-4 Turbo by preference; open7 has no strong model: weak = the
mean outcome of the seven open models, strong = 1 (a frontier model that answers), so the
metric asks how well a score ranks prompts by how many open models fail them.

``load_split`` and ``Example`` are the older per-prompt view (four sources, a soft target)
that bench/make_sample_log.py builds its traffic sample from.
"""

from __future__ import annotations

import ast
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.router.errors import TrainingDataError
from gateway.router.labels import LabelledPrompt, Observation

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


def _alpaca_rows(root: Path) -> Iterator[tuple[str, dict[str, Any], float]]:
    """(model, row, preference) for every AlpacaEval row that has a preference, clamped to
    1..2: 1 = GPT-4 Turbo's answer preferred, 2 = the model's."""
    for model in ALPACA_MODELS:
        path = root / f"alpacaeval_{model}_vs_gpt4_turbo.json"
        try:
            rows = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise TrainingDataError(f"{path}: {exc}") from exc
        for r in rows:
            if r.get("preference") is not None:
                yield model, r, min(max(float(r["preference"]), 1.0), 2.0)


def load_alpacaeval(root: Path) -> list[Example]:
    """One Example per instruction. preference: 1 = GPT-4 Turbo preferred, 2 = the other model.

    Target: mean over the three open/cheap models of (2 - preference); quality for metrics:
    win probability of the routed model against the other, with Mixtral as the weak model.
    """
    prefs: dict[str, list[float]] = {}
    weak_pref: dict[str, float] = {}
    order: list[str] = []
    for model, r, p in _alpaca_rows(root):
        text = r["instruction"]
        if text not in prefs:
            prefs[text] = []
            order.append(text)
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


@dataclass(frozen=True, slots=True)
class Source:
    name: str  # "<collection>/<benchmark>", e.g. "open7/mbpp"
    family: str  # the benchmark behind it: leave-one-out holds out a whole family
    prompts: list[LabelledPrompt]
    weak_quality: list[float]  # per prompt, for the RouteLLM metrics
    strong_quality: list[float]


OPEN7_TASKS = (
    "MATH_prealgebra",
    "arc_easy",
    "arc_challenge",
    "humaneval",
    "javascript",
    "mbpp",
    "ceval",
    "cmmlu",
)
ALPACA_SUBSETS = ("selfinstruct", "oasst", "koala", "helpful_base", "vicuna")
# sources drawn from the same benchmark (same questions or the same question pool)
_FAMILY = {"arc_challenge": "arc", "arc_easy": "arc", "mbpp": "mbpp"}


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _routerbench_source(root: Path, task: str) -> Source:
    csv.field_size_limit(1 << 30)
    seen: set[str] = set()
    prompts, weak, strong = [], [], []
    name = f"routerbench/{task}"
    for split in ("train", "test"):
        path = root / f"routerbench_{task}_{split}.csv"
        try:
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                models = [
                    k
                    for k in reader.fieldnames or ()
                    if "|" not in k
                    and k
                    not in ("", "sample_id", "prompt", "eval_name", "oracle_model_to_route_to")
                ]
                for row in reader:
                    text = _unwrap(row["prompt"])
                    if row[_WEAK] == "" or row[_STRONG] == "" or text in seen:
                        continue  # a few ARC rows lack outcomes; 6 ARC prompts are in both splits
                    seen.add(text)
                    obs = tuple(
                        Observation(f"fails:{m}", 1.0 - float(row[m]))
                        for m in models
                        if row[m] != ""
                    )
                    prompts.append(LabelledPrompt(_user(text), name, obs))
                    weak.append(float(row[_WEAK]))
                    strong.append(float(row[_STRONG]))
        except (OSError, KeyError, ValueError) as exc:
            raise TrainingDataError(f"{path}: {exc!r}") from exc
    return Source(name, _FAMILY.get(task, task), prompts, weak, strong)


def _alpaca_sources(root: Path) -> list[Source]:
    by_text: dict[str, dict] = {}
    for model, r, p in _alpaca_rows(root):
        entry = by_text.setdefault(r["instruction"], {"dataset": r["dataset"], "obs": {}})
        entry["obs"][model] = 2.0 - p
    out = []
    for subset in ALPACA_SUBSETS:
        name = f"alpacaeval/{subset}"
        prompts, weak, strong = [], [], []
        for text, e in by_text.items():
            if e["dataset"] != subset or ALPACA_EVAL_WEAK not in e["obs"]:
                continue
            obs = tuple(Observation(f"loses_to_gpt4:{m}", y) for m, y in e["obs"].items())
            prompts.append(LabelledPrompt(_user(text), name, obs))
            lose = e["obs"][ALPACA_EVAL_WEAK]  # P(GPT-4 Turbo preferred over Mixtral)
            weak.append(1.0 - lose)
            strong.append(lose)
        out.append(Source(name, f"alpacaeval-{subset}", prompts, weak, strong))
    return out


def _open7_source(root: Path, task: str) -> Source:
    files = [root / "open7" / f"{task}.json"]
    if not files[0].exists():
        files = [root / "open7" / f"{task}_{s}.json" for s in ("train", "test")]
    name = f"open7/{task}"
    seen: set[str] = set()
    prompts, weak, strong = [], [], []
    for path in files:
        try:
            rows = json.loads(path.read_text())
            for r in rows:
                text, scores = r["question"], r["scores"]
                if text in seen:
                    continue
                seen.add(text)
                obs = tuple(Observation(f"fails:{m}", 1.0 - float(v)) for m, v in scores.items())
                prompts.append(LabelledPrompt(_user(text), name, obs))
                weak.append(sum(float(v) for v in scores.values()) / len(scores))
                strong.append(1.0)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TrainingDataError(f"{path}: {exc!r}") from exc
    return Source(name, _FAMILY.get(task, task), prompts, weak, strong)


def sources(root: Path) -> list[Source]:
    """All sixteen sources of shared/data/routing, in a fixed order."""
    root = Path(root)
    return [
        *(_routerbench_source(root, t) for t in ROUTERBENCH_TASKS),
        *_alpaca_sources(root),
        *(_open7_source(root, t) for t in OPEN7_TASKS),
    ]


def load_split(root: Path, split: str) -> dict[str, list[Example]]:
    """All sources' ``split`` ('train' or 'test'), keyed by source name."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    out = {t: load_routerbench(root, t, split) for t in ROUTERBENCH_TASKS}
    out["alpacaeval"] = alpaca_split(load_alpacaeval(root), split)
    return out
