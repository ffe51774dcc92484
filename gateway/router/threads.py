"""How many CPU threads torch gives the learned router in one gateway worker process: one.

The router scores a prompt inline on the event loop, and torch runs each op on an OpenMP team
as wide as its intra-op thread count, all CPUs by default. The router's ops are small (the
shipped router is a static embedding: ~0.5 ms of CPU a prompt), and a team is only as fast as
its slowest thread: whenever another process holds a CPU (another worker, the load balancer,
an upstream on the same host) the team waits for it, and GNU OpenMP spin-waits meanwhile. On
2 CPUs, one thread per worker served 5x the requests of torch's default at a fifth of the CPU
per request, with one worker as with two (bench/results/router_threads.md), so the default is
1; ``--router-threads N`` gives a router with a contextual encoder more on a dedicated host.

The count is set once per process, before the first learned scorer is built (torch's setting is
process-wide; a thread that already ran torch keeps the count it started with), and only in a
process whose policy uses the learned router: a heuristic-only gateway never imports torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from gateway.config.schema import Policy

__all__ = [
    "DEFAULT_THREADS",
    "ENV",
    "WORKERS_ENV",
    "RouterThreads",
    "parse_threads",
    "usable_cpus",
]

ENV = "GATEWAY_ROUTER_THREADS"  # set by `gateway serve` for its worker processes
WORKERS_ENV = "GATEWAY_WORKERS"
DEFAULT_THREADS = 1

log = logging.getLogger("gateway.router")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: taskset, cpusets), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call on this platform
        return os.cpu_count() or 1


def parse_threads(value: str) -> int:
    """A thread count as a flag or the environment spells it; ValueError if it is none."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"expected a positive whole number of threads, got {value!r}")
    return n


def _uses_learned(policy: Policy) -> bool:
    return any(
        m.uses_difficulty() and m.difficulty is not None and m.difficulty.scorer == "learned"
        for m in policy.models.values()
    )


class RouterThreads:
    """Sets torch's intra-op thread count the first time a policy with the learned router is
    built in this process (at start-up, or the reload that adds it): the worker's own setting."""

    def __init__(self, threads: int, workers: int, cpus: int) -> None:
        self.threads = threads
        self.workers = workers
        self.cpus = cpus
        self.applied: int | None = None  # torch's count once set

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RouterThreads | None:
        """What `gateway serve` asked for (``GATEWAY_ROUTER_THREADS``); None: leave torch be."""
        raw = env.get(ENV)
        if raw is None:
            return None
        try:
            n = parse_threads(raw)
        except ValueError as exc:
            raise ValueError(f"{ENV}: {exc}") from None
        return cls(n, int(env.get(WORKERS_ENV, "1")), usable_cpus())

    def prepare(self, policy: Policy) -> None:
        """Before a runtime is built from ``policy``: set torch's threads if it needs torch."""
        if self.applied is not None or not _uses_learned(policy):
            return
        import torch

        torch.set_num_threads(self.threads)
        self.applied = torch.get_num_threads()
        log.info(
            "learned router: torch intra-op threads %d in this worker (%d worker(s) on %d CPUs; "
            "--router-threads)",
            self.applied,
            self.workers,
            self.cpus,
        )
        if self.applied * self.workers > self.cpus:
            log.warning(
                "learned router: %d worker(s) x %d torch threads exceed the %d usable CPUs; "
                "the workers' OpenMP teams will preempt one another (bench/results/"
                "router_threads.md: 20-40x the CPU per prompt on 2 CPUs)",
                self.workers,
                self.applied,
                self.cpus,
            )
