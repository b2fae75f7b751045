"""Provisioned policy versions: immutable rows numbered without gaps.

`next_number` must run inside the provisioning lock (`Database.lock`), which makes max+1 safe
across replicas; the primary key would refuse a duplicate anyway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from microseg.store import schema

T = schema.versions


@dataclass(frozen=True)
class Version:
    """One provisioned version."""

    number: int
    note: str
    created_at: float
    created_by: str
    rollback_of: int | None
    documents: list[dict[str, Any]]
    changes: dict[str, Any]


def next_number(conn: sa.Connection) -> int:
    """The number the next provision gets."""
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(T.c.number), 0))).scalar_one()) + 1


def insert(conn: sa.Connection, version: Version) -> None:
    """Store a new version."""
    conn.execute(sa.insert(T).values(**version.__dict__))


def new(
    number: int,
    *,
    note: str,
    actor: str,
    documents: list[dict[str, Any]],
    changes: dict[str, Any],
    rollback_of: int | None = None,
) -> Version:
    """A version made now."""
    return Version(number, note, time.time(), actor, rollback_of, documents, changes)


def get(conn: sa.Connection, number: int) -> Version | None:
    """One version, or None."""
    row = conn.execute(sa.select(T).where(T.c.number == number)).first()
    return None if row is None else Version(**row._asdict())


def listing(conn: sa.Connection, limit: int = 100, before: int | None = None) -> list[Version]:
    """Newest first, without documents' weight mattering to the caller."""
    query = sa.select(T).order_by(T.c.number.desc()).limit(limit)
    if before is not None:
        query = query.where(T.c.number < before)
    return [Version(**row._asdict()) for row in conn.execute(query)]


def count(conn: sa.Connection) -> int:
    """How many versions exist."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(T)).scalar_one())
