import json

import numpy as np
import pytest

from gateway.router import artifact
from gateway.router.errors import RouterModelError, TrainingDataError
from gateway.router.labels import LabelledPrompt, Observation
from gateway.router.model import RouterConfig, column_names
from gateway.router.training import fit

from .conftest import EASY, HARD


def _msgs(texts):
    return [[{"role": "user", "content": t}] for t in texts]


def _rows(synthetic_rows):
    return [
        LabelledPrompt(
            [{"role": "user", "content": r["prompt"]}],
            r["source"],
            (Observation("needs_strong", float(r["label"])),),
        )
        for r in synthetic_rows
    ]


@pytest.fixture(scope="module", params=["none", "anchors", "raw"])
def trained(request, synthetic_rows):
    return fit(_rows(synthetic_rows), RouterConfig(embedding=request.param, l2=0.1))


def test_learns_the_signal_and_outputs_probabilities(trained):
    p_easy, p_hard = trained.predict(_msgs(EASY)), trained.predict(_msgs(HARD))
    assert ((0 < p_easy) & (p_easy < 1)).all() and ((0 < p_hard) & (p_hard < 1)).all()
    assert p_hard.min() > p_easy.max()
    assert trained.columns == column_names(trained.config)


def test_outcomes_of_several_models_and_preferences_train_one_difficulty():
    """Two sources with different label kinds: per-model outcomes (a strong and a weak model
    that both fail the hard prompts more) and judge preferences. Their base rates differ a
    lot; the shared difficulty still ranks hard above easy, and the offsets keep the rates."""
    rows = []
    for i in range(60):
        hard = i % 2 == 0
        text = f"{(HARD if hard else EASY)[i % 4]} (case {i})"
        outcomes = (
            Observation("fails:big", 0.3 * hard),
            Observation("fails:small", 0.4 + 0.6 * hard),
        )
        rows.append(LabelledPrompt(_msgs([text])[0], "bench", outcomes))
        pref = (Observation("loses_to_strong:small", 0.9 if hard else 0.6),)
        rows.append(LabelledPrompt(_msgs([text + " please"])[0], "chat", pref))
    model = fit(rows, RouterConfig(embedding="none", l2=0.01))
    assert model.predict(_msgs(HARD)).min() > model.predict(_msgs(EASY)).max()
    offsets = model.meta["arm_offsets"]
    assert offsets["bench|fails:small"] > offsets["bench|fails:big"]
    assert set(model.meta["sources"]) == {"bench", "chat"}


def test_prior_pulls_a_small_fit_toward_the_prior(synthetic_rows):
    rows = _rows(synthetic_rows)
    cfg = RouterConfig(embedding="none", l2=0.01)
    prior = fit(rows, cfg)
    flipped = [
        LabelledPrompt(
            r.messages, r.source, (Observation("needs_strong", 1 - r.observations[0].y),)
        )
        for r in rows[:30]
    ]
    free = fit(flipped, cfg)
    held = fit(flipped, cfg.model_copy(update={"l2": 10.0}), prior=prior)
    # the free fit learns the flipped labels; a strong pull keeps the prior's ranking
    assert free.predict(_msgs(EASY)).mean() > free.predict(_msgs(HARD)).mean()
    assert held.predict(_msgs(HARD)).mean() > held.predict(_msgs(EASY)).mean()
    gap = np.abs(held.coef - prior.coef).sum(), np.abs(free.coef - prior.coef).sum()
    assert gap[0] < 0.2 * gap[1]
    with pytest.raises(TrainingDataError, match="other inputs"):
        fit(flipped, RouterConfig(embedding="anchors"), prior=prior)


def test_round_trip_is_exact(trained, tmp_path):
    path = artifact.save(trained, tmp_path / "m")
    loaded = artifact.load(tmp_path / "m")
    assert path.stat().st_size < 100_000
    probe = _msgs(EASY + HARD)
    np.testing.assert_allclose(loaded.predict(probe), trained.predict(probe), rtol=1e-6, atol=1e-7)
    assert artifact.load(path).config == trained.config


def test_builtin_artifact_is_small_and_loads():
    path = artifact.resolve("builtin")
    assert path.stat().st_size < 200_000
    assert artifact.load(None).config == artifact.load("builtin").config == RouterConfig()


@pytest.mark.parametrize(
    ("edit", "msg"),
    [
        (lambda d: d.update(format="other"), "not a gateway router"),
        (lambda d: d.update(version=1), "version 1 is not supported"),
        (lambda d: d["columns"].pop(), "columns do not match"),
        (lambda d: d.update(coef=d["coef"][:-1]), "one entry per column"),
        (lambda d: d["config"].update(bogus=1), "malformed"),
        (lambda d: d.pop("intercept"), "malformed"),
    ],
)
def test_load_rejects_broken_artifacts(tmp_path, edit, msg):
    doc = json.loads(artifact.resolve(None).read_text())
    edit(doc)
    (tmp_path / "router.json").write_text(json.dumps(doc))
    with pytest.raises(RouterModelError, match=msg):
        artifact.load(tmp_path)


def test_non_finite_weights_rejected(tmp_path):
    doc = json.loads(artifact.resolve(None).read_text())
    doc["coef"][0] = float("nan")
    (tmp_path / "router.json").write_text(json.dumps(doc))
    with pytest.raises(RouterModelError, match="finite"):
        artifact.load(tmp_path)


def test_missing_artifact(tmp_path):
    with pytest.raises(RouterModelError, match="cannot read"):
        artifact.load(tmp_path / "nothing")


def _one(text, y, source="s"):
    return LabelledPrompt(_msgs([text])[0], source, (Observation("needs_strong", y),))


def test_training_input_errors():
    cfg = RouterConfig(embedding="none")
    with pytest.raises(TrainingDataError, match="at least 20"):
        fit([_one("a", 1.0)] * 5, cfg)
    with pytest.raises(TrainingDataError, match="all labels are equal"):
        fit([_one("a", 1.0)] * 30, cfg)
    with pytest.raises(TrainingDataError, match=r"\[0, 1\]"):
        fit([_one("a", 2.0)] * 15 + [_one("b", 0.0)] * 15, cfg)
    with pytest.raises(TrainingDataError, match=r"\[0, 1\]"):
        fit([_one("a", float("nan"))] * 15 + [_one("b", 0.0)] * 15, cfg)
