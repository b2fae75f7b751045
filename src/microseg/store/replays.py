"""Signed webhook calls already accepted: the replay guard every replica shares.

Used by the webhook route (`server/routes_hooks.py`) after it has checked a call's signature and
freshness: `claim` records the call's digest (SHA-256 of its signature) until its timestamp can no
longer pass the freshness check. The table lives in the database, not in process memory, so a
second replica and a restarted server refuse a call seen before. One INSERT that skips an existing
key decides: of two replicas racing with the same call, only one inserts the row (PostgreSQL makes
the second wait for the first's commit, SQLite serializes writers), so only one acts.

Does not check signatures or clocks; the caller does.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from microseg.store import database, schema

T = schema.hook_replays


def digest(signature: str) -> str:
    """What the table keeps of a signature."""
    return hashlib.sha256(signature.encode()).hexdigest()


def claim(
    db: database.Database, conn: sa.Connection, signature: str, *, hook: str, expires_at: float, now: float
) -> bool:
    """Record a signed call as used; False when it was recorded before (a replay).

    Rows past their expiry are deleted first: they can no longer be replayed anyway."""
    conn.execute(sa.delete(T).where(T.c.expires_at < now))
    row = {"digest": digest(signature), "hook": hook, "expires_at": expires_at}
    stmt = db.insert_ignoring_duplicates(T).values(**row).returning(T.c.digest)
    return conn.execute(stmt).first() is not None  # rowcount is not reliable here on every driver


def count(conn: sa.Connection) -> int:
    """How many calls are remembered now."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(T)).scalar_one())
