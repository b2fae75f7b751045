"""Apply-set membership: which set of policy files manages an object, and what those files declared.

Written by the server's apply (`server/applysets.py`, through `server/service.py`) in the
transaction that writes the objects; read by the next apply of the same set (what it may prune,
which declared fields it may remove). A row is dropped when its object is deleted or created
anew by anything but an apply, so an object made through the API or the console never belongs
to a set it did not come from.

Does not decide what a set owns or merges; the server does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from microseg.store import schema

T = schema.applied_objects
Key = tuple[str, str]
CHUNK = 500
"""Names per DELETE (SQLite allows a bounded number of parameters per statement)."""


@dataclass(frozen=True)
class Member:
    """One object of an apply set: its kind, stored name, set and declared fields."""

    kind: str
    name: str
    apply_set: str
    fields: dict[str, Any] = field(default_factory=dict)
    """What the set's files declared last time (workloads: `labels`, `attributes`, `addresses`,
    `spec` keys); empty for kinds a file owns whole."""

    @property
    def key(self) -> Key:
        """(kind, stored name), as the objects table keys it."""
        return (self.kind, self.name)


def _member(row: sa.Row[Any]) -> Member:
    return Member(row.kind, row.name, row.apply_set, dict(row.fields or {}))


def of_objects(conn: sa.Connection, keys: Iterable[Key]) -> dict[Key, Member]:
    """The memberships of these objects (those in no set are absent)."""
    wanted = set(keys)
    if not wanted:
        return {}
    kinds = sorted({k for k, _ in wanted})
    rows = conn.execute(sa.select(T).where(T.c.kind.in_(kinds)))
    return {m.key: m for m in map(_member, rows) if m.key in wanted}


def of_set(conn: sa.Connection, apply_set: str) -> list[Member]:
    """Every object the set manages, by kind then name."""
    query = sa.select(T).where(T.c.apply_set == apply_set).order_by(T.c.kind, T.c.name)
    return [_member(row) for row in conn.execute(query)]


def record(conn: sa.Connection, members: Iterable[Member], actor: str) -> None:
    """Make these the memberships of their objects (replacing any other set's)."""
    listed = list(members)
    by_kind: dict[str, list[str]] = {}
    for m in listed:
        by_kind.setdefault(m.kind, []).append(m.name)
    for kind, names in by_kind.items():
        for start in range(0, len(names), CHUNK):
            chunk = names[start : start + CHUNK]
            conn.execute(sa.delete(T).where(T.c.kind == kind, T.c.name.in_(chunk)))
    now = time.time()
    rows = [
        {
            "kind": m.kind,
            "name": m.name,
            "apply_set": m.apply_set,
            "fields": m.fields,
            "applied_at": now,
            "applied_by": actor,
        }
        for m in listed
    ]
    if rows:
        conn.execute(sa.insert(T), rows)


def forget(conn: sa.Connection, kind: str, name: str) -> None:
    """The object belongs to no set any more (deleted, or made anew outside an apply)."""
    conn.execute(sa.delete(T).where(T.c.kind == kind, T.c.name == name))
