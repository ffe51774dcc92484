"""A real Prometheus server (Debian's ``prometheus`` binary) on loopback, for the deploy tests.

The project's own scrape config and rules are used, with three changes that keep a test short:
the targets are the loopback servers the test started, the scrape and evaluation intervals are
one second (every rule group's ``interval`` too), and storage is a temporary folder.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from deploy_files import DEPLOY

__all__ = ["PROMETHEUS", "Prometheus", "PrometheusError", "running_prometheus"]

PROMETHEUS = shutil.which("prometheus")
READY_TIMEOUT_S = 30.0
START_ATTEMPTS = 3  # a free port can be taken between choosing it and Prometheus binding it


class PrometheusError(RuntimeError):
    """Prometheus answered a query with an error, or did not start."""


@dataclass(frozen=True, slots=True)
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar as one sample) of ``expr`` now; raises on any error."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"{expr!r}: {body.get('errorType')}: {body.get('error')}")
        data = body["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        r = httpx.get(
            f"{self.url}/api/v1/label/{label}/values", params={"match[]": match}, timeout=10
        )
        r.raise_for_status()
        return r.json()["data"]

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its evaluation health (``ok``, ``err``, ``unknown``)."""
        r = httpx.get(f"{self.url}/api/v1/rules", timeout=10)
        r.raise_for_status()
        return [rule for g in r.json()["data"]["groups"] for rule in g["rules"]]

    def wait_for(self, expr: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Poll until ``expr`` returns at least one sample; that result."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr!r} returned nothing within {timeout_s}s")
            time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(
    folder: Path, targets: Mapping[str, Sequence[str]], port: int, interval_s: int
) -> Path:
    """deploy/prometheus/prometheus.yml with loopback targets, short intervals and its rules."""
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text(encoding="utf-8"))
    interval = f"{interval_s}s"
    config["global"].update(
        scrape_interval=interval, evaluation_interval=interval, scrape_timeout=interval
    )
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        job.pop("scrape_interval", None)
        job.pop("scrape_timeout", None)
        if name == "prometheus":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
        elif name in targets:
            job["static_configs"] = [{"targets": list(targets[name])}]
        else:
            raise KeyError(f"no targets given for scrape job {name!r}")
        jobs.append(job)
    config["scrape_configs"] = jobs
    rule_files = []
    for rel in config["rule_files"]:
        rules = yaml.safe_load((DEPLOY / "prometheus" / rel).read_text(encoding="utf-8"))
        for group in rules["groups"]:
            group["interval"] = interval
        out = folder / Path(rel).name
        out.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
        rule_files.append(str(out))
    config["rule_files"] = rule_files
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def running_prometheus(
    folder: Path, targets: Mapping[str, Sequence[str]], interval_s: int = 1
) -> Iterator[Prometheus]:
    """Start Prometheus scraping ``targets`` (job name -> ``host:port`` list); stop it after."""
    if PROMETHEUS is None:
        raise PrometheusError("no prometheus binary on PATH (Debian package `prometheus`)")
    log_path = folder / "prometheus.log"
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        config = write_config(folder, targets, port, interval_s)
        storage = folder / f"data-{port}"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={storage}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            url = f"http://127.0.0.1:{port}"
            if _wait_ready(proc, url):
                yield Prometheus(url)
                return
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    raise PrometheusError(
        f"prometheus did not start: {log_path.read_text(encoding='utf-8')[-2000:]}"
    )


def _wait_ready(proc: subprocess.Popen, url: str) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False  # e.g. the port was taken meanwhile
        try:
            if httpx.get(url + "/-/ready", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False
