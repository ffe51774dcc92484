"""What a new policy gives up, next to the running one, of the guarantees a cut file loses.

A policy file read while it is being written can be valid YAML and a valid policy with its
end missing: no ``auth:`` section (an open gateway), a confidential rule without its
``self_hosted_only: true`` line (data that may leave). The file watcher refuses a reload that
loosens auth or residency in such a way; an explicit reload (SIGHUP, POST /admin/reload)
applies it, since someone asked for it.

Pure functions over two validated ``Policy`` objects; no I/O.
"""

from __future__ import annotations

from gateway.config.schema import Policy, Provenance

__all__ = ["loosenings"]


def _values(v: str | list[str]) -> set[str]:
    return {v} if isinstance(v, str) else set(v)


def _weaker(old: Provenance, new: Provenance) -> bool:
    """Whether ``new`` lets through a backend that ``old`` refused."""
    if old.self_hosted_only and not new.self_hosted_only:
        return True
    if not set(old.deny_backends) <= set(new.deny_backends):
        return True
    for label, vals in old.deny.items():
        if not _values(vals) <= _values(new.deny.get(label, [])):
            return True
    for label, vals in old.require.items():
        if label not in new.require or not _values(new.require[label]) <= _values(vals):
            return True
    return False


def _auth(old: Policy, new: Policy) -> list[str]:
    out: list[str] = []
    had = [k for k in old.auth.keys if k.key is not None]
    if had and not any(k.key is not None for k in new.auth.keys):
        out.append("auth: API keys were required and none are configured now (an open gateway)")
    by_name = {k.name: k for k in new.auth.keys}
    for k in had:
        n = by_name.get(k.name)
        if n is None:
            continue
        if k.models is not None and n.models is None:
            out.append(f"auth.keys.{k.name}: was limited to models {k.models}, now to none")
        if _weaker(k.provenance, n.provenance):
            out.append(f"auth.keys.{k.name}.provenance: lets more backends through")
    for name, team in old.teams.items():
        now = new.teams.get(name)
        if _weaker(team.provenance, now.provenance if now else Provenance()):
            out.append(f"teams.{name}.provenance: lets more backends through")
        if team.models is not None and (now is None or now.models is None):
            out.append(f"teams.{name}: was limited to models {team.models}, now to none")
    return out


def _residency(old: Policy, new: Policy) -> list[str]:
    out: list[str] = []
    for mname, model in old.models.items():
        now = new.models.get(mname)
        if now is None:
            continue  # the model is gone: its requests get 404, nothing leaves
        rules = {r.name: r for r in now.rules}
        for r in model.rules:
            if not r.self_hosted_only:
                continue
            n = rules.get(r.name)
            where = f"models.{mname} rule {r.name!r}"
            if n is None:
                out.append(f"{where}: was self_hosted_only and is gone")
            elif not n.self_hosted_only:
                out.append(f"{where}: is no longer self_hosted_only")
            elif n.when != r.when:
                out.append(f"{where}: self_hosted_only, and its condition changed")
    data = {d.name: d for d in new.data_rules}
    for d in old.data_rules:
        nd = data.get(d.name)
        where = f"data_rules {d.name!r}"
        if nd is None:
            out.append(f"{where}: is gone")
        elif nd.when != d.when:
            out.append(f"{where}: its condition changed")
        elif _weaker(d.only, nd.only):
            out.append(f"{where}: lets more backends through")
    return out


def loosenings(old: Policy, new: Policy) -> list[str]:
    """Each way ``new`` is looser than ``old`` in auth or residency, in words; [] if none."""
    return _auth(old, new) + _residency(old, new)
