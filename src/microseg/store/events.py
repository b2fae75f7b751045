"""Events: what operators should look at (tamper, blocked, would-block, flow-forged, agent offline
/ failed), kept for the server's event retention (`expire`, run with the flow retention)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from microseg.store import schema

T = schema.events


def add(
    conn: sa.Connection, kind: str, workload: str | None, message: str, details: dict[str, Any] | None = None
) -> None:
    """Record one event."""
    add_many(conn, [{"kind": kind, "workload": workload, "message": message, "details": details or {}}])


def add_many(conn: sa.Connection, items: list[dict[str, Any]]) -> None:
    """Record several events (each: kind, workload, message, details)."""
    if items:
        now = time.time()
        conn.execute(sa.insert(T), [{"at": now, **item} for item in items])


def query(
    conn: sa.Connection,
    *,
    after: int = 0,
    limit: int = 100,
    kind: str | None = None,
    workload: str | None = None,
) -> list[dict[str, Any]]:
    """Events with id > `after`, oldest first."""
    stmt = sa.select(T).where(T.c.id > after).order_by(T.c.id).limit(limit)
    if kind:
        stmt = stmt.where(T.c.kind == kind)
    if workload:
        stmt = stmt.where(T.c.workload == workload)
    return [row._asdict() for row in conn.execute(stmt)]


def expire(conn: sa.Connection, before: float) -> int:
    """Drop events recorded before `before`; how many were dropped."""
    return int(conn.execute(sa.delete(T).where(T.c.at < before)).rowcount)
