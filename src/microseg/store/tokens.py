"""API tokens (roles admin / editor / viewer) and agent enrollment tokens, stored hashed.

A token is `msk_<id>_<secret>` (API) or `mse_<id>_<secret>` (enrollment): the id names it in
listings and the audit log, the secret is 32 random bytes. Only the SHA-256 of the whole token is
stored: a database dump gives no usable token, and with 256 bits of randomness a slow hash adds
nothing.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from microseg.store import schema

API = schema.api_tokens
ENROLL = schema.enrollment_tokens
ROLES = ("viewer", "editor", "admin")
"""Weakest first: each role may do everything the ones before it may."""


def digest(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def make(prefix: str) -> tuple[str, str]:
    """(id, token) for a new token."""
    ident = secrets.token_hex(6)
    return ident, f"{prefix}_{ident}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class ApiToken:
    """An API token as listed (never with its secret)."""

    id: str
    name: str
    role: str
    created_at: float
    created_by: str
    """The creator's audit actor (`token:NAME(ID)@OWNER` when a token made it: see `creator_id`)."""
    revoked_at: float | None
    owner: str
    """The person or system holding the token; four-eyes compares owners, not tokens."""


def create_api(
    conn: sa.Connection, name: str, role: str, actor: str, owner: str = ""
) -> tuple[ApiToken, str]:
    """A new API token and its text (shown once); `owner` defaults to `name`."""
    ident, token = make("msk")
    row = ApiToken(ident, name, role, time.time(), actor, None, owner or name)
    conn.execute(sa.insert(API).values(**row.__dict__, secret_hash=digest(token)))
    return row, token


CREATOR = re.compile(r"\(([0-9a-f]{12})\)(?:@[^()]+)?\Z")
"""The token id in an actor `token:NAME(ID)` or `token:NAME(ID)@OWNER`. The owner part never holds
parentheses (see `server.auth`), so only the real `(ID)` is followed by none up to the end,
whatever the name holds."""


def creator_id(actor: str) -> str | None:
    """The id of the API token an audit actor names (None for agents, hooks, the CLI, ...)."""
    found = CREATOR.search(actor) if actor.startswith("token:") else None
    return None if found is None else found.group(1)


def api_by_id(conn: sa.Connection, ident: str) -> ApiToken | None:
    """The API token with this id, revoked or not."""
    row = conn.execute(sa.select(API).where(API.c.id == ident)).first()
    return None if row is None else _api(row)


def lineage(conn: sa.Connection, ident: str) -> list[ApiToken]:
    """The token and the tokens that created it, newest first, up to one made by no token (the
    CLI, the first start). Ids seen twice end the walk, so a corrupt chain cannot loop."""
    found: list[ApiToken] = []
    current = api_by_id(conn, ident)
    while current is not None and current.id not in {t.id for t in found}:
        found.append(current)
        parent = creator_id(current.created_by)
        current = None if parent is None else api_by_id(conn, parent)
    return found


def find_api(conn: sa.Connection, token: str) -> ApiToken | None:
    """The live (not revoked) API token with this text."""
    query = sa.select(API).where(API.c.secret_hash == digest(token), API.c.revoked_at.is_(None))
    row = conn.execute(query).first()
    return None if row is None else _api(row)


def list_api(conn: sa.Connection) -> list[ApiToken]:
    """Every API token, oldest first."""
    return [_api(r) for r in conn.execute(sa.select(API).order_by(API.c.created_at))]


def _api(row: sa.Row[Any]) -> ApiToken:
    found = {k: v for k, v in row._asdict().items() if k != "secret_hash"}
    return ApiToken(**{**found, "owner": found["owner"] or found["name"]})


def revoke_api(conn: sa.Connection, ident: str) -> bool:
    """Revoke; whether a live token had that id."""
    stmt = sa.update(API).where(API.c.id == ident, API.c.revoked_at.is_(None)).values(revoked_at=time.time())
    return conn.execute(stmt).rowcount > 0


def count_api(conn: sa.Connection) -> int:
    """How many API tokens were ever made."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(API)).scalar_one())


def create_enrollment(
    conn: sa.Connection,
    name: str,
    labels: dict[str, str],
    *,
    mode: str,
    reusable: bool,
    expires_at: float | None,
    actor: str,
    workloads: Sequence[str] = (),
    address_ranges: Sequence[str] = (),
) -> tuple[dict[str, Any], str]:
    """A new enrollment token and its text (shown once). `workloads`: existing workloads its agents
    may adopt (an admin's binding); `address_ranges`: CIDRs its agents may claim (empty: any)."""
    ident, token = make("mse")
    row = {
        "id": ident,
        "name": name,
        "labels": labels,
        "mode": mode,
        "reusable": reusable,
        "uses": 0,
        "expires_at": expires_at,
        "created_at": time.time(),
        "created_by": actor,
        "revoked_at": None,
        "workloads": list(workloads),
        "address_ranges": list(address_ranges),
    }
    conn.execute(sa.insert(ENROLL).values(**row, secret_hash=digest(token)))
    return row, token


_CONSUME = (
    sa.update(ENROLL)
    .where(
        ENROLL.c.secret_hash == sa.bindparam("digest"),
        ENROLL.c.revoked_at.is_(None),
        sa.or_(ENROLL.c.reusable.is_(True), ENROLL.c.uses == 0),
        sa.or_(ENROLL.c.expires_at.is_(None), ENROLL.c.expires_at > sa.bindparam("now")),
    )
    .values(uses=ENROLL.c.uses + 1)
    .returning(*ENROLL.c)
)
"""Built once: enrollment runs it at every enrollment (its cache key is memoised with it)."""


def consume_enrollment(conn: sa.Connection, token: str) -> dict[str, Any] | None:
    """Use an enrollment token once; None when it is unknown, revoked, expired or used up.

    One conditional UPDATE ... RETURNING the row (one round trip), so two agents racing for a
    one-time token cannot both win."""
    now = time.time()
    row = conn.execute(_CONSUME, {"digest": digest(token), "now": now}).first()
    return None if row is None else {k: v for k, v in row._asdict().items() if k != "secret_hash"}


def enrollment_by_id(conn: sa.Connection, ident: str) -> dict[str, Any] | None:
    """The enrollment token with this id (also revoked or used up: its grants still bound its agents)."""
    row = conn.execute(sa.select(ENROLL).where(ENROLL.c.id == ident)).first()
    return None if row is None else {k: v for k, v in row._asdict().items() if k != "secret_hash"}


def list_enrollment(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every enrollment token (without secrets)."""
    rows = conn.execute(sa.select(ENROLL).order_by(ENROLL.c.created_at))
    return [{k: v for k, v in r._asdict().items() if k != "secret_hash"} for r in rows]


def revoke_enrollment(conn: sa.Connection, ident: str) -> bool:
    """Revoke; whether a live token had that id."""
    stmt = sa.update(ENROLL).where(ENROLL.c.id == ident, ENROLL.c.revoked_at.is_(None))
    return conn.execute(stmt.values(revoked_at=time.time())).rowcount > 0
