"""Loading a policy for simulation, where every configured backend counts as enabled.

A backend whose key variable is unset is disabled at load; in a simulation that would send
everything elsewhere and make the numbers meaningless. So by default every unset
``os.environ/NAME`` reference without a default gets a placeholder value: nothing is ever
called, and backends switched off with ``enabled: false`` stay off.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.config.loader import LoadedPolicy, parse_policy, read_policy_text
from gateway.errors import PolicyError

__all__ = ["SimPolicy", "load_for_simulation", "PLACEHOLDER"]

PLACEHOLDER = "set-for-simulation"
_REF = re.compile(r"os\.environ/([A-Za-z_][A-Za-z0-9_]*)(:-)?")


@dataclass(slots=True)
class SimPolicy:
    loaded: LoadedPolicy
    enabled_for_simulation: list[str]  # backends the real environment would have disabled
    filled_variables: list[str]


def _unset_refs(text: str, env: Mapping[str, str]) -> list[str]:
    names = {m.group(1) for m in _REF.finditer(text) if m.group(2) is None}
    return sorted(n for n in names if not env.get(n))


def load_for_simulation(
    path: str | Path, env: Mapping[str, str], all_backends: bool = True
) -> SimPolicy:
    p = Path(path)
    text = read_policy_text(p)
    if not all_backends:
        return SimPolicy(parse_policy(text, env, source=str(p)), [], [])
    filled = _unset_refs(text, env)
    sim = parse_policy(text, {**env, **dict.fromkeys(filled, PLACEHOLDER)}, source=str(p))
    try:
        real_enabled = set(parse_policy(text, env, source=str(p)).enabled_backends)
    except PolicyError:  # every backend disabled in the real environment
        real_enabled = set()
    extra = [b for b in sim.enabled_backends if b not in real_enabled]
    return SimPolicy(sim, extra, filled)
