"""A supervised ``local-engine serve`` child process for ``gateway serve --local-engine MODEL``.

The gateway starts the engine on a loopback port, waits until its ``/health`` answers (so the
first request finds a loaded model), watches it from one thread (a dead process is restarted,
one whose health check fails ``health_failures`` times in a row is killed and restarted, with
backoff between attempts), and stops it when the gateway stops. On Linux the child also gets
``PR_SET_PDEATHSIG``: if the gateway is killed outright, the engine does not outlive it.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

__all__ = ["EngineStartError", "EngineSupervisor", "SupervisorConfig", "free_loopback_port"]

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_START_TIMEOUT_S = 300.0  # loading a model from a cold disk
DEFAULT_HEALTH_INTERVAL_S = 1.0
DEFAULT_HEALTH_TIMEOUT_S = 2.0
DEFAULT_HEALTH_FAILURES = 5  # consecutive, before a live but unresponsive engine is restarted
DEFAULT_STOP_TIMEOUT_S = 15.0
MAX_BACKOFF_S = 10.0
PR_SET_PDEATHSIG = 1


class EngineStartError(RuntimeError):
    """The engine exited or did not become healthy while starting; the message says which."""


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    model: str  # what `local-engine serve --model` takes: demo, FILE.gguf, DIR
    port: int
    extra_args: tuple[str, ...] = ()
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    health_interval_s: float = DEFAULT_HEALTH_INTERVAL_S
    health_timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S
    health_failures: int = DEFAULT_HEALTH_FAILURES
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S
    python: str = field(default=sys.executable)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            self.python,
            "-m",
            "local_engine.cli",
            "serve",
            "--model",
            self.model,
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            *self.extra_args,
        ]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not glibc/Linux: the engine is still stopped by stop()
        pass


class EngineSupervisor:
    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards _proc between the watcher and stop()
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # lifecycle
    def start(self) -> None:
        """Start the engine and wait until it is healthy; then watch it. Raises EngineStartError."""
        logger.info(
            "local engine: starting `%s` (model %s) on %s",
            " ".join(self.config.command()[2:]),
            self.config.model,
            self.config.base_url,
        )
        started = time.monotonic()
        self._spawn()
        self._wait_healthy()
        logger.info(
            "local engine: ready in %.1f s at %s", time.monotonic() - started, self.config.base_url
        )
        self._thread = threading.Thread(
            target=self._watch, name="local-engine-supervisor", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(
                timeout=self.config.health_interval_s + self.config.health_timeout_s + 1
            )
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.config.stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("local engine: did not stop on SIGTERM; killing it")
                proc.kill()
                proc.wait()
        logger.info("local engine: stopped")

    # internals
    def _spawn(self) -> None:
        # its own session: a terminal's Ctrl-C reaches the gateway only, which then stops the
        # engine (rather than the watcher seeing it die mid-shutdown and restarting it)
        proc = subprocess.Popen(
            self.config.command(), start_new_session=True, preexec_fn=_die_with_parent
        )
        with self._lock:
            if self._stop.is_set():  # stop() ran meanwhile: do not leave a child behind
                proc.terminate()
                proc.wait()
                return
            self._proc = proc

    def _healthy(self) -> bool:
        url = f"http://{LOOPBACK}:{self.config.port}/health"
        try:
            with urllib.request.urlopen(url, timeout=self.config.health_timeout_s) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.config.start_timeout_s
        while time.monotonic() < deadline and not self._stop.is_set():
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is not None:
                raise EngineStartError(
                    f"local engine exited with status {proc.returncode} while starting "
                    f"(its error is printed above)"
                )
            if self._healthy():
                return
            time.sleep(0.2)
        if not self._stop.is_set():
            raise EngineStartError(
                f"local engine did not answer /health within {self.config.start_timeout_s:.0f} s"
            )

    def _watch(self) -> None:
        failures, backoff = 0, 0.5
        while not self._stop.wait(self.config.health_interval_s):
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                if self._healthy():
                    failures, backoff = 0, 0.5
                    continue
                failures += 1
                if failures < self.config.health_failures:
                    continue
                logger.warning(
                    "local engine: %d health checks failed in a row; restarting it", failures
                )
                proc.kill()
                proc.wait()
            else:
                logger.warning(
                    "local engine: exited with status %s; restarting it", proc.returncode
                )
            failures = 0
            self._restart(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _restart(self, backoff: float) -> None:
        if self._stop.wait(backoff):
            return
        self.restarts += 1
        self._spawn()
        try:
            self._wait_healthy()
        except EngineStartError as exc:
            logger.error("local engine: restart %d failed: %s", self.restarts, exc)
            return  # the next watch round sees the dead process and tries again
        logger.info("local engine: restarted (%d so far)", self.restarts)
