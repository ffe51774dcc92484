"""The learned difficulty router: features, offline MiniLM embedding, training, calibration.

Public surface (import from the submodules; nothing heavy loads on ``import gateway.router``):

    gateway.router.scorer.LearnedScorer        DifficultyScorer over a trained artefact
    gateway.router.calibration                 threshold_for_share, SpendCapController
    gateway.router.model                       RouterConfig, RouterModel, train
    gateway.router.artifact                    save, load (DIR/router.json)
    gateway.router.dataset                     JSONL formats of `router train` / `router score`
    gateway.router.metrics                     RouteLLM metrics (PGR, CPT, APGR)
    gateway.router.cli                         register(subparsers)
    gateway.router.errors                      RouterError, RouterModelError, TrainingDataError
"""
