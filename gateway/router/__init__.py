"""The learned difficulty router: features, offline MiniLM embedding, training, artefacts.

Public surface (import from the submodules; nothing heavy loads on ``import gateway.router``):

    gateway.router.scorer.LearnedScorer        DifficultyScorer over a trained artefact
    gateway.router.labels                      Observation, LabelledPrompt (what training reads)
    gateway.router.training                    fit(labelled prompts, config) -> RouterModel
    gateway.router.model                       RouterConfig, RouterModel (inference)
    gateway.router.artifact                    save, load (DIR/router.json, format version 2)
    gateway.router.dataset                     JSONL formats of `router train` / `router score`
    gateway.router.shared_data                 the sixteen public sources of shared/data/routing
    gateway.router.metrics                     RouteLLM metrics (PGR, CPT, APGR)
    gateway.router.cli                         register(subparsers), build_default(data)
    gateway.router.errors                      RouterError, RouterModelError, TrainingDataError

Layering: gateway.routing (scorer contract, heuristic, the one FallbackScorer, threshold
calibration) never imports this package; this package builds on it.
"""
