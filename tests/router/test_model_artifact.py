import json

import numpy as np
import pytest

from gateway.router import artifact
from gateway.router.errors import RouterModelError, TrainingDataError
from gateway.router.model import RouterConfig, column_names, train

from .conftest import EASY, HARD


def _msgs(texts):
    return [[{"role": "user", "content": t}] for t in texts]


@pytest.fixture(scope="module", params=["none", "anchors"])
def trained(request, synthetic_rows):
    cfg = RouterConfig(embedding=request.param, c=0.1)
    return train(
        _msgs([r["prompt"] for r in synthetic_rows]),
        [r["label"] for r in synthetic_rows],
        groups=[r["source"] for r in synthetic_rows],
        config=cfg,
    )


def test_learns_the_signal_and_outputs_probabilities(trained):
    p_easy, p_hard = trained.predict(_msgs(EASY)), trained.predict(_msgs(HARD))
    assert ((0 < p_easy) & (p_easy < 1)).all() and ((0 < p_hard) & (p_hard < 1)).all()
    assert p_hard.min() > p_easy.max()
    assert trained.columns == column_names(trained.config)


def test_round_trip_is_exact(trained, tmp_path):
    path = artifact.save(trained, tmp_path / "m")
    loaded = artifact.load(tmp_path / "m")
    assert path.stat().st_size < 100_000
    probe = _msgs(EASY + HARD)
    np.testing.assert_allclose(loaded.predict(probe), trained.predict(probe), rtol=1e-6)
    assert artifact.load(path).config == trained.config


def test_builtin_artifact_is_small_and_loads():
    path = artifact.resolve("builtin")
    assert path.stat().st_size < 5_000_000
    assert artifact.load(None).config == artifact.load("builtin").config


@pytest.mark.parametrize(
    ("edit", "msg"),
    [
        (lambda d: d.update(format="other"), "not a gateway router"),
        (lambda d: d.update(version=99), "version"),
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
    text = artifact.resolve(None).read_text().replace('"intercept": ', '"intercept_": ', 1)
    doc = json.loads(text)
    doc["intercept"] = 0.0
    doc["coef"][0] = float("nan")
    (tmp_path / "router.json").write_text(json.dumps(doc))
    with pytest.raises(RouterModelError, match="finite"):
        artifact.load(tmp_path)


def test_missing_artifact(tmp_path):
    with pytest.raises(RouterModelError, match="cannot read"):
        artifact.load(tmp_path / "nothing")


def test_training_input_errors():
    with pytest.raises(TrainingDataError, match="at least 20"):
        train(_msgs(["a"] * 5), [1] * 5)
    with pytest.raises(TrainingDataError, match="all targets are equal"):
        train(_msgs(["a"] * 30), [1] * 30, config=RouterConfig(embedding="none"))
    with pytest.raises(TrainingDataError, match=r"\[0, 1\]"):
        train(_msgs(["a"] * 30), [2] * 15 + [0] * 15, config=RouterConfig(embedding="none"))
