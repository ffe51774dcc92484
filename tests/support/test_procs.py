"""The marker check of ``tests.support.procs`` sees what a test leaves behind, even a process
reparented away from the one the test started, and nothing that another user runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.support.procs import (
    alive,
    cmdline,
    kill_leftovers,
    marked_env,
    marked_processes,
    new_marker,
)

# a parent that starts a sleeping child in a session of its own, prints its PID and exits
# without waiting for it: the child is reparented (to init or a subreaper), as a leaked engine
# would be once the gateway that started it is gone
LEAKER = """
import subprocess, sys
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(120)"],
    start_new_session=True,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
print(child.pid, flush=True)
"""


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid) or not cmdline(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_left_behind_grandchild_is_seen_reported_and_killed() -> None:
    marker = new_marker()
    out = subprocess.run(
        [sys.executable, "-c", LEAKER],
        env=marked_env(marker),
        capture_output=True,
        text=True,
        timeout=30,
    )
    leaked = int(out.stdout)
    try:
        assert marked_processes(marker) == [leaked]
        killed = kill_leftovers(marker, grace=0.3)
        assert list(killed) == [leaked] and "time.sleep(120)" in killed[leaked]
        assert _gone_within(leaked, 5)
        assert marked_processes(marker) == []
    finally:
        if alive(leaked) and cmdline(leaked):
            os.kill(leaked, 9)


def test_the_same_command_without_the_marker_is_not_counted() -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    mine = new_marker()
    try:
        assert other.pid not in marked_processes(mine)
        assert other.pid not in marked_processes(new_marker())
        assert kill_leftovers(mine, grace=0.1) == {}
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_process_that_ended_leaves_nothing_to_report() -> None:
    marker = new_marker()
    subprocess.run([sys.executable, "-c", "pass"], env=marked_env(marker), check=True)
    assert marked_processes(marker) == []
    assert kill_leftovers(marker, grace=0.1) == {}
