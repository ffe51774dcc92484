"""Which processes a test started, told apart from everyone else's on the machine.

A test that launches a process tree (``gateway serve --local-engine demo`` and the engine it
supervises) and wants to prove nothing of it outlives the test cannot ask ``pgrep`` for the
command line: another user of the machine may be running the same command. Instead it puts a
unique marker in the environment of the process it starts (:func:`marked_env`); every
descendant inherits it, even one reparented to init after its parent died, so
:func:`marked_processes` finds exactly the test's own processes by reading ``/proc/*/environ``.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "MARKER_VAR",
    "alive",
    "cmdline",
    "kill_leftovers",
    "marked_env",
    "marked_processes",
    "new_marker",
]

MARKER_VAR = "GATEWAY_TEST_PROCESS_MARKER"
PROC = Path("/proc")


def new_marker() -> str:
    return uuid.uuid4().hex


def marked_env(marker: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) plus the marker variable."""
    env = dict(os.environ if base is None else base)
    env[MARKER_VAR] = marker
    return env


def _environ(pid_dir: Path) -> bytes | None:
    try:
        return (pid_dir / "environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        # gone meanwhile, or another user's process (which cannot carry our marker)
        return None


def _is_zombie(pid_dir: Path) -> bool:
    try:
        stat = (pid_dir / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    # the state follows the parenthesised command name, which may itself hold spaces or ')'
    return stat[stat.rindex(")") + 2 :].startswith(("Z", "X"))


def marked_processes(marker: str) -> list[int]:
    """PIDs of live (not zombie) processes whose environment carries ``marker``."""
    entry = f"{MARKER_VAR}={marker}".encode()
    found = []
    for pid_dir in PROC.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        environ = _environ(pid_dir)
        if environ is not None and entry in environ.split(b"\0") and not _is_zombie(pid_dir):
            found.append(int(pid_dir.name))
    return sorted(found)


def alive(pid: int) -> bool:
    """Whether ``pid`` exists (a zombie not yet reaped counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def cmdline(pid: int) -> str:
    """The command line of ``pid``, arguments joined by spaces ('' once it is gone)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def kill_leftovers(marker: str, grace: float = 10.0) -> dict[int, str]:
    """Wait up to ``grace`` seconds for the marked processes to end; SIGKILL those still there.

    Returns what had to be killed (PID -> command line), so a test asserts it is empty and
    a leak neither passes nor outlives the test run.
    """
    deadline = time.monotonic() + grace
    while (left := marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = {}
    for pid in left:
        killed[pid] = cmdline(pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            killed.pop(pid)
    return killed
