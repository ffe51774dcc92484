"""Router errors. They sit apart from the HTTP hierarchy in gateway.errors: the router runs
offline (CLI, training) as well as in the request path, where LearnedScorer catches
RouterError and falls back to the heuristic scorer.

    RouterError (ValueError)
    ├── RouterModelError      an artefact or the embedding model cannot be loaded or is invalid
    └── TrainingDataError     a training/scoring JSONL file is malformed (names file and line)
"""

from __future__ import annotations

__all__ = ["RouterError", "RouterModelError", "TrainingDataError"]


class RouterError(ValueError):
    pass


class RouterModelError(RouterError):
    pass


class TrainingDataError(RouterError):
    pass
