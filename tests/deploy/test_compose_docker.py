"""deploy/compose and deploy/docker, checked by reading (no Docker daemon here): every path they
name exists, services and ports agree with the Prometheus targets, the commands are the CLIs'."""

from __future__ import annotations

import re

import pytest
from deploy_files import DEPLOY, REPO, load_yaml

from gateway.cli import build_parser as gateway_parser
from local_engine.cli import build_parser as engine_parser

COMPOSE_DIR = DEPLOY / "compose"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml("compose/docker-compose.yml")


def test_compose_has_the_stack(compose):
    assert set(compose["services"]) == {"gateway", "local-engine", "redis", "prometheus", "grafana"}


def test_compose_build_and_bind_mounts_exist(compose):
    for name, svc in compose["services"].items():
        if "build" in svc:
            context = (COMPOSE_DIR / svc["build"]["context"]).resolve()
            assert context == REPO, name
            assert (context / svc["build"]["dockerfile"]).resolve() == DOCKERFILE
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).resolve().is_dir(), f"{name}: {mount}"


def test_compose_commands_parse_with_the_real_clis(compose):
    gw = gateway_parser().parse_args(compose["services"]["gateway"]["command"][1:])
    policy_dir = next(
        m for m in compose["services"]["gateway"]["volumes"] if m.endswith(":/etc/gateway:ro")
    )
    assert (
        (COMPOSE_DIR / policy_dir.split(":")[0] / gw.policy.removeprefix("/etc/gateway/"))
        .resolve()
        .is_file()
    )
    assert (gw.host, gw.port) == ("0.0.0.0", 4000)
    eng = engine_parser().parse_args(compose["services"]["local-engine"]["command"][1:])
    assert (eng.host, eng.port, eng.model) == ("0.0.0.0", 8000, "/opt/models/demo")
    assert "make-demo-model /opt/models/demo" in DOCKERFILE.read_text(encoding="utf-8")


def test_compose_wiring_matches_prometheus_targets(compose):
    env = compose["services"]["gateway"]["environment"]
    assert env["LOCAL_ENGINE_URL"] == "http://local-engine:8000/v1"
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    # keys come from the caller's environment, never from the file
    assert (
        env["OPENAI_API_KEY"] == "${OPENAI_API_KEY:-}"
        and env["ANTHROPIC_API_KEY"] == "${ANTHROPIC_API_KEY:-}"
    )
    scrape = load_yaml("prometheus/prometheus.yml")["scrape_configs"]
    targets = {t for job in scrape for sc in job["static_configs"] for t in sc["targets"]}
    assert {"gateway:4000", "local-engine:8000"} <= targets
    assert "4000:4000" in compose["services"]["gateway"]["ports"]
    assert "../prometheus:/etc/prometheus:ro" in compose["services"]["prometheus"]["volumes"]


def test_dockerfile_copies_what_the_package_needs():
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim$", text, re.M)
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text  # CPU unless told
    copied = set(re.findall(r"^COPY (\S+)", text, re.M)) | set(
        re.findall(r"^COPY \S+ (\S+) \./$", text, re.M)
    )
    for path in copied:
        assert (REPO / path).exists(), path
    assert {"gateway", "local_engine", "policies", "pyproject.toml"} <= copied
    assert re.search(r"^USER 10001$", text, re.M)
    # the build context keeps what is copied and drops the rest
    text = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    ignore = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "**"
    for path in ("gateway/", "local_engine/", "policies/", "pyproject.toml", "README.md"):
        assert "!" + path in ignore, path
