import json
from pathlib import Path

import numpy as np
import pytest

from gateway.cli import main as gateway_main
from gateway.router import artifact

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "routing"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data/routing is not next to the checkout")
def test_shipped_artifact_is_what_build_default_makes(tmp_path):
    assert (
        gateway_main(["router", "build-default", "--data", str(SHARED), "--out", str(tmp_path)])
        == 0
    )
    built = json.loads((tmp_path / "router.json").read_text())
    shipped = json.loads(artifact.resolve(None).read_text())
    assert built["config"] == shipped["config"] and built["columns"] == shipped["columns"]
    for key in ("mean", "scale", "coef"):
        np.testing.assert_allclose(built[key], shipped[key], rtol=1e-4, atol=1e-5)
