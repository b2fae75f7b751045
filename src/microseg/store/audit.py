"""The audit log: append-only records of who did what, when, with the diff.

Written in the same transaction as the change it records, so a change without its record (or a
record without its change) cannot exist. The database refuses UPDATE and DELETE of this table.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from microseg.store import schema

T = schema.audit
_INSERT = sa.insert(T)
"""Built once: every change records through it (a kept statement keeps its memoised cache key)."""


def record(conn: sa.Connection, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
    """Append one record."""
    values = {"at": time.time(), "actor": actor, "action": action, "target": target, "details": details}
    conn.execute(_INSERT, values)


def query(
    conn: sa.Connection,
    *,
    after: int = 0,
    limit: int = 100,
    target: str | None = None,
    actor: str | None = None,
) -> list[dict[str, Any]]:
    """Records with id > `after`, oldest first, optionally of one target prefix or actor."""
    stmt = sa.select(T).where(T.c.id > after).order_by(T.c.id).limit(limit)
    if target:
        stmt = stmt.where(T.c.target.startswith(target, autoescape=True))
    if actor:
        stmt = stmt.where(T.c.actor == actor)
    return [row._asdict() for row in conn.execute(stmt)]


def latest(conn: sa.Connection, target: str, actions: tuple[str, ...]) -> dict[str, Any] | None:
    """The newest record of one of `actions` on exactly `target`, if any."""
    stmt = sa.select(T).where(T.c.target == target, T.c.action.in_(actions)).order_by(T.c.id.desc()).limit(1)
    row = conn.execute(stmt).first()
    return None if row is None else row._asdict()


def count(conn: sa.Connection) -> int:
    """How many records exist."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(T)).scalar_one())
