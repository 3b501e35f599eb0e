"""Bearer tokens and roles (contract section 5): staff < senior < leader < admin."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from .models import ApiToken
from .store import Store

Role = Literal["staff", "senior", "leader", "admin"]
ROLES: tuple[Role, ...] = ("staff", "senior", "leader", "admin")
TOKEN_PREFIX = "sct_"  # noqa: S105  (a visible prefix, not a secret)


@dataclass(frozen=True)
class Principal:
    """Who is asking: a token's or a web user's name, role, sites (None: every site) and DSL mark."""

    name: str
    role: Role
    sites: frozenset[str] | None
    dsl: bool = False

    def has_role(self, needed: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)

    def may_see(self, site: str) -> bool:
        return self.sites is None or site in self.sites


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


NAME_MAX = 200  # api_token.name, audit.actor and the record's names of people


def create_token(store: Store, name: str, role: Role, sites: list[str], dsl: bool, now: dt.datetime) -> str:
    """Store a new token's hash and return the token itself (shown once, never stored)."""
    if not name.strip() or len(name) > NAME_MAX:
        # The name is written beside each of the holder's changes (audit.actor, recorded_by, ...), all
        # of that length: refused here alike on both databases (PostgreSQL enforces it, SQLite not).
        raise ValueError(f"--name: one to {NAME_MAX} characters, as the records will show it")
    if role not in ROLES:
        raise ValueError(f"role: must be one of {', '.join(ROLES)}")
    if role in ("staff", "senior") and not sites:
        raise ValueError(f"--site: required for the {role} role")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.add_token(
        ApiToken(
            name=name,
            role=role,
            sites=sorted(set(sites)),
            dsl=dsl,
            token_hash=hash_token(token),
            created_at=now,
        )
    )
    return token


def principal_for(store: Store, token: str) -> Principal | None:
    """The principal a token stands for, or None for an unknown or revoked token."""
    row = store.find_token(hash_token(token))
    if row is None or row.role not in ROLES:
        return None
    role: Role = row.role
    return Principal(name=row.name, role=role, sites=frozenset(row.sites) if row.sites else None, dsl=row.dsl)
