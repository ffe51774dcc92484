"""deploy/k8s, checked by reading plus one live part: the manifests agree with each other and with
the CLIs, the ConfigMap holds the default policy, and a ConfigMap update reaches a running gateway."""

from __future__ import annotations

import os
import re

import pytest
from deploy_files import DEPLOY, REPO, k8s_objects, load_yaml
from live_metrics import ConfigMapDir

from gateway import cli as gateway_cli
from gateway.config.loader import load_policy
from local_engine.cli import build_parser as engine_parser

SECRET = "llm-gateway-keys"


@pytest.fixture(scope="module")
def objs() -> dict[tuple[str, str], dict]:
    return k8s_objects()


def container(objs, name: str) -> dict:
    return objs[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0]


def test_kustomization_lists_existing_files_and_no_secret(objs):
    kust = load_yaml("k8s/kustomization.yaml")
    for f in kust["resources"]:
        assert (DEPLOY / "k8s" / f).is_file(), f
    assert "secret.example.yaml" not in kust["resources"]
    assert {k for k, _ in objs} >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "Namespace",
    }


def test_gateway_deployment(objs):
    dep = objs[("Deployment", "gateway")]
    assert dep["spec"]["replicas"] == 2
    assert (
        dep["spec"]["selector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )
    c = container(objs, "gateway")
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    args = gateway_cli.build_parser().parse_args(c["args"][1:])
    assert c["args"][0] == "gateway" and args.func is gateway_cli._serve
    assert (args.host, args.port) == ("0.0.0.0", c["ports"][0]["containerPort"])


def test_policy_comes_from_the_configmap_as_a_watched_file(objs):
    pod = objs[("Deployment", "gateway")]["spec"]["template"]["spec"]
    policy_path = gateway_cli.build_parser().parse_args(pod["containers"][0]["args"][1:]).policy
    mount = next(
        m
        for m in pod["containers"][0]["volumeMounts"]
        if policy_path.startswith(m["mountPath"] + "/")
    )
    # subPath mounts never see ConfigMap updates: the whole directory must be mounted
    assert "subPath" not in mount
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    cm = objs[("ConfigMap", volume["configMap"]["name"])]
    assert policy_path.removeprefix(mount["mountPath"] + "/") in cm["data"]


def test_configmap_is_the_default_policy_and_loads(objs, tmp_path):
    text = objs[("ConfigMap", "gateway-policy")]["data"]["policy.yaml"]
    assert text == (REPO / "policies" / "default.yaml").read_text(encoding="utf-8"), (
        "deploy/k8s/gateway-configmap.yaml differs from policies/default.yaml: "
        "run `python deploy/k8s/sync_configmap.py`"
    )
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    env = {name: "set" for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    loaded = load_policy(path, env)
    assert {"local", "openai", "anthropic"} <= set(loaded.enabled_backends)


def test_keys_come_from_a_secret_and_services_resolve(objs):
    env = {e["name"]: e for e in container(objs, "gateway")["env"]}
    for var, key in (
        ("OPENAI_API_KEY", "openai-api-key"),
        ("ANTHROPIC_API_KEY", "anthropic-api-key"),
    ):
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"], ref["optional"]) == (SECRET, key, True)
        assert "value" not in env[var]
    example = load_yaml("k8s/secret.example.yaml")
    assert example["metadata"]["name"] == SECRET
    assert set(example["stringData"]) == {"openai-api-key", "anthropic-api-key"}
    assert all(v == "" for v in example["stringData"].values())
    for var, scheme in (("LOCAL_ENGINE_URL", "http"), ("REDIS_URL", "redis")):
        m = re.fullmatch(rf"{scheme}://([a-z-]+):(\d+)(/.*)?", env[var]["value"])
        assert m, env[var]
        svc = objs[("Service", m.group(1))]
        assert int(m.group(2)) in [p["port"] for p in svc["spec"]["ports"]]


def test_services_select_pods_and_name_their_ports(objs):
    deployments = [o for (k, _), o in objs.items() if k == "Deployment"]
    for (kind, name), svc in objs.items():
        if kind != "Service":
            continue
        dep = next(
            d
            for d in deployments
            if svc["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        )
        ports = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, (name, p)


def test_pdb_covers_the_gateway(objs):
    pdb = objs[("PodDisruptionBudget", "gateway")]
    labels = objs[("Deployment", "gateway")]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] == 1


def test_local_engine_asks_for_a_gpu(objs):
    c = container(objs, "local-engine")
    assert (
        c["resources"]["requests"]["nvidia.com/gpu"]
        == 1
        == c["resources"]["limits"]["nvidia.com/gpu"]
    )
    args = engine_parser().parse_args(c["args"][1:])
    assert (args.device, args.host, args.port) == (
        "cuda",
        "0.0.0.0",
        c["ports"][0]["containerPort"],
    )
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"


def test_configmap_update_is_hot_reloaded(live_gateway):
    # the live gateway read its policy through a kubelet-style ConfigMap mount; the session
    # fixture swapped in a bad policy (refused) and then a good one (taken)
    text = live_gateway[1]
    assert re.search(r'^gateway_policy_reloads_total\{result="failure"\} 1\.0$', text, re.M)
    assert re.search(r'^gateway_policy_reloads_total\{result="success"\} [1-9]', text, re.M)


def test_cli_watches_the_configmap_path_not_its_current_target(tmp_path, monkeypatch):
    cm = ConfigMapDir(tmp_path, "policy.yaml")
    cm.write((REPO / "policies" / "default.yaml").read_text(encoding="utf-8"))
    seen = {}
    monkeypatch.setenv("GATEWAY_POLICY", "")
    monkeypatch.setenv("GATEWAY_WATCH_INTERVAL", "")
    monkeypatch.setattr("gateway.cli._listen", lambda host, port: None)  # no real port
    monkeypatch.setattr(
        "gateway.cli._run", lambda *a, **kw: seen.update(policy=os.environ["GATEWAY_POLICY"]) or 0
    )
    assert gateway_cli.main(["serve", "--policy", str(cm.path)]) == 0
    assert seen["policy"] == str(cm.path)
