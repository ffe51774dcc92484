"""Which replica of a fleet takes the next request: plain Python, no I/O, clock injected.

Load of a replica = requests this gateway has in flight on it, plus what its own ``/metrics``
says others put there (its running + waiting requests at the last scrape, less the ones that
were ours then). ``least_load`` picks the lowest load; ``round_robin`` takes turns. With
prefix affinity the conversation's key is hashed onto a ring of replicas (virtual nodes) and
the first replica clockwise whose load is under ceil(``load_factor`` x (total load + 1) / n)
takes it,
so a conversation keeps its prefix cache unless that replica is overloaded ("consistent hashing
with bounded loads", Mirrokni, Thorup and Zadimoghaddam, 2018).

A replica is eligible while its circuit is not open and its last scrape (when scraping is on)
succeeded. When none is eligible by scrape, replicas with a closed circuit are still tried:
a broken ``/metrics`` must not stop a replica that serves.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.backends.resilience import CircuitBreaker
from gateway.config.fleet import FleetConfig
from gateway.config.schema import CircuitBreakerConfig

__all__ = ["Choice", "FleetBalancer", "Replica", "ReplicaLoad", "prefix_key"]

VIRTUAL_NODES = 64


@dataclass(slots=True)
class ReplicaLoad:
    """What a replica's ``/metrics`` said (vLLM's gauge names), and when."""

    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float = 0.0
    at: float = 0.0


@dataclass(slots=True, eq=False)
class Replica:
    """One engine replica. ``key`` is its URL (API root), also its metrics label."""

    key: str
    breaker: CircuitBreaker
    outstanding: int = 0  # this gateway's requests in flight on it
    load: ReplicaLoad | None = None  # None: never scraped (or scraping is off)
    outstanding_at_scrape: int = 0
    scrape_ok: bool = True
    successes: int = 0
    failures: int = 0

    @property
    def external(self) -> float:
        """Requests on it that are not ours (other gateways, direct clients), as of the scrape."""
        if self.load is None:
            return 0.0
        return max(0.0, self.load.running + self.load.waiting - self.outstanding_at_scrape)

    @property
    def score(self) -> float:
        return self.outstanding + self.external

    def usable(self) -> bool:
        return self.breaker.state != "open"


@dataclass(slots=True, frozen=True)
class Choice:
    replica: Replica
    saturated: bool  # every eligible replica is past a spill-over threshold
    affinity: str | None  # "home" (the ring's first pick), "moved" (bounded load), None


def prefix_key(text: str, chars: int) -> int:
    """64-bit hash of the first ``chars`` characters of a conversation's text."""
    digest = hashlib.blake2b(text[:chars].encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


def _point(label: str) -> int:
    return int.from_bytes(hashlib.blake2b(label.encode(), digest_size=8).digest(), "big")


@dataclass(slots=True)
class FleetBalancer:
    cfg: FleetConfig
    clock: Callable[[], float] = time.monotonic
    replicas: dict[str, Replica] = field(default_factory=dict)
    _ring: list[tuple[int, str]] = field(default_factory=list)
    _ring_points: list[int] = field(default_factory=list)
    _turn: int = 0

    # ------------------------------------------------------------ membership

    def set_members(self, keys: Iterable[str]) -> tuple[list[str], list[str]]:
        """Make the fleet exactly ``keys`` (state of kept replicas survives); (added, removed)."""
        wanted = list(dict.fromkeys(keys))
        added = [k for k in wanted if k not in self.replicas]
        removed = [k for k in self.replicas if k not in wanted]
        for k in removed:
            del self.replicas[k]
        br = self.cfg.replica_circuit_breaker
        for k in added:
            breaker = CircuitBreaker(
                CircuitBreakerConfig(
                    failure_threshold=br.failure_threshold, cooldown_s=br.cooldown_s
                ),
                clock=self.clock,
            )
            self.replicas[k] = Replica(k, breaker)
        if added or removed:
            ring = sorted(
                (_point(f"{k}#{i}"), k) for k in self.replicas for i in range(VIRTUAL_NODES)
            )
            self._ring, self._ring_points = ring, [p for p, _ in ring]
        return added, removed

    # ------------------------------------------------------------ live state

    def saturated(self, r: Replica) -> bool:
        s = self.cfg.spill_over
        if s.max_outstanding is not None and r.outstanding >= s.max_outstanding:
            return True
        if r.load is None:
            return False
        if s.max_waiting is not None and r.load.waiting > s.max_waiting:
            return True
        return s.max_kv_cache_usage is not None and r.load.kv_cache_usage >= s.max_kv_cache_usage

    def observe(self, key: str, load: ReplicaLoad | None) -> None:
        """A scrape of replica ``key``: its load, or None when the scrape failed."""
        r = self.replicas.get(key)
        if r is None:
            return
        if load is None:
            r.scrape_ok = False
            return
        r.scrape_ok = True
        r.load = load
        r.outstanding_at_scrape = r.outstanding

    def eligible(self, exclude: frozenset[str] | set[str] = frozenset()) -> list[Replica]:
        usable = [r for k, r in self.replicas.items() if k not in exclude and r.usable()]
        scraping = self.cfg.metrics_path is not None
        healthy = [r for r in usable if r.scrape_ok] if scraping else usable
        return healthy or [r for r in usable if r.breaker.state == "closed"]

    # ------------------------------------------------------------ the choice

    def choose(
        self, key: int | None, exclude: frozenset[str] | set[str] = frozenset()
    ) -> Choice | None:
        """The replica for a request with prefix ``key`` (None: no affinity), skipping
        ``exclude``; None when no replica can be tried."""
        cands = self.eligible(exclude)
        if not cands:
            return None
        spill = self.cfg.spill_over
        saturated = spill.active and all(self.saturated(r) for r in cands)
        if spill.active and not saturated:
            cands = [r for r in cands if not self.saturated(r)]
        affinity = None
        if self.cfg.balance == "round_robin":
            self._turn += 1
            pick = cands[self._turn % len(cands)]
        elif key is not None and self.cfg.prefix_affinity.enabled and len(cands) > 1:
            pick, affinity = self._on_ring(key, cands)
        else:
            pick = min(cands, key=lambda r: (r.score, r.load.kv_cache_usage if r.load else 0.0))
        return Choice(pick, saturated, affinity)

    def _on_ring(self, key: int, cands: list[Replica]) -> tuple[Replica, str]:
        allowed = {r.key: r for r in cands}
        total = sum(r.score for r in cands)
        bound = math.ceil(self.cfg.prefix_affinity.load_factor * (total + 1) / len(cands))
        start = bisect.bisect(self._ring_points, key)
        first: Replica | None = None
        seen: set[str] = set()
        n = len(self._ring)
        for i in range(n):
            k = self._ring[(start + i) % n][1]
            if k in seen or k not in allowed:
                continue
            seen.add(k)
            r = allowed[k]
            if first is None:
                first = r
            if r.score < bound:
                return r, "home" if r is first else "moved"
            if len(seen) == len(allowed):
                break
        # unreachable with load_factor >= 1 (the bounds add up to more than the total load)
        return min(cands, key=lambda r: r.score), "moved"
