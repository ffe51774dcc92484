"""Self-hosted fleets: one backend over several engine replicas (balancer, live load, DNS)."""

from gateway.backends.fleet.backend import FleetBackend, conversation_text
from gateway.backends.fleet.balancer import FleetBalancer, Replica, ReplicaLoad, prefix_key
from gateway.backends.fleet.collector import FleetCollector
from gateway.backends.fleet.load import MetricsFormatError, parse_load

__all__ = [
    "FleetBackend",
    "FleetBalancer",
    "FleetCollector",
    "MetricsFormatError",
    "Replica",
    "ReplicaLoad",
    "conversation_text",
    "parse_load",
    "prefix_key",
]
