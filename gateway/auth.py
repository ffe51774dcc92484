"""Client and admin API keys.

A presented key is hashed (SHA-256) and compared with ``hmac.compare_digest`` against every
configured key's digest, without stopping at a match, so the time taken does not depend on
how much of a guess is right nor on which key matched. Only key *names* ever reach logs and
metrics.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config.schema import AuthConfig
from gateway.errors import AuthenticationError

__all__ = ["Caller", "KeyRing", "bearer_token"]


@dataclass(slots=True, frozen=True)
class Caller:
    key_name: str | None
    team: str
    models: frozenset[str] | None  # allowed virtual models; None: all


ANONYMOUS = Caller(key_name=None, team="default", models=None)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def bearer_token(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return headers.get("api-key") or headers.get("x-api-key")


class KeyRing:
    def __init__(self, cfg: AuthConfig) -> None:
        self._keys: list[tuple[bytes, Caller]] = []
        for k in cfg.keys:
            if k.key is None:  # its variable is unset: that key simply does not exist
                continue
            models = frozenset(k.models) if k.models is not None else None
            self._keys.append((_digest(k.key.get_secret_value()), Caller(k.name, k.team, models)))
        self._admin = _digest(cfg.admin_key.get_secret_value()) if cfg.admin_key else None
        self.rpm_by_key = {k.name: k.rpm for k in cfg.keys if k.rpm}

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        if not self._keys:
            return ANONYMOUS
        token = bearer_token(headers)
        if token is None:
            raise AuthenticationError("missing API key: send it as 'Authorization: Bearer <key>'")
        d = _digest(token)
        found: Caller | None = None
        for digest, caller in self._keys:
            if hmac.compare_digest(digest, d):
                found = caller
        if found is None:
            raise AuthenticationError("invalid API key")
        return found

    def is_admin(self, headers: Mapping[str, str]) -> bool:
        if self._admin is None:
            return False
        token = bearer_token(headers)
        return token is not None and hmac.compare_digest(_digest(token), self._admin)
