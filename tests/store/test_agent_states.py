"""`agents.states` reads every agent's state as one JSON array the database builds: whatever an
agent reported as its applied hash (quotes, commas, new lines) stays one string of its own agent,
and each flag is read from its own column, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import sqlalchemy as sa

from microseg.store import agents, database

HOSTILE = '"],["ghost", "x", 0, 0, 1, 0]\n, \\u0000 spaced'


def test_every_agent_is_read_with_its_own_flags_whatever_it_reported(db: database.Database) -> None:
    with db.write() as conn:
        assert agents.states(conn) == []
        plain, _ = agents.create(conn, "web-1", {"hostname": "web-1"})
        odd, _ = agents.create(conn, "db-1", {"hostname": "db-1"})
        broken, _ = agents.create(conn, "cache-1", {"hostname": "cache-1"})
        gone, _ = agents.create(conn, "old-1", {"hostname": "old-1"})
        agents.seen(conn, plain, applied_hash="a" * 64)
        agents.seen(conn, odd, applied_hash=HOSTILE, tampered=True)
        assert agents.revoke(conn, gone)
        conn.execute(
            sa.update(agents.T).where(agents.T.c.id == broken).values(errors=["nft: bad"], online=False)
        )
    with db.read() as conn:
        found = {s.workload: s for s in agents.states(conn)}
    assert found == {
        "web-1": agents.State("web-1", "a" * 64, tampered=False, failed=False, online=True, revoked=False),
        "db-1": agents.State("db-1", HOSTILE, tampered=True, failed=False, online=True, revoked=False),
        "cache-1": agents.State("cache-1", None, tampered=False, failed=True, online=False, revoked=False),
        "old-1": agents.State("old-1", None, tampered=False, failed=False, online=True, revoked=True),
    }
