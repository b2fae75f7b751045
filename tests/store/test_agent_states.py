"""`agents.tally` counts every agent by what decides its state, in the database: whatever an agent
reported as its applied hash (quotes, commas, new lines) stays one string of its own agent, and
each count is read from its own columns, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import sqlalchemy as sa

from microseg.store import agents, database

HOSTILE = '"],["ghost", "x", 0, 0, 1, 0]\n, \\u0000 spaced'


def test_every_agent_is_counted_by_its_own_flags_whatever_it_reported(db: database.Database) -> None:
    with db.write() as conn:
        assert agents.tally(conn) == agents.Tally([], 0, 0, 0)
        plain, _ = agents.create(conn, "web-1", {"hostname": "web-1"})
        odd, _ = agents.create(conn, "db-1", {"hostname": "db-1"})
        forged, _ = agents.create(conn, "app-1", {"hostname": "app-1"})
        broken, _ = agents.create(conn, "cache-1", {"hostname": "cache-1"})
        gone, _ = agents.create(conn, "old-1", {"hostname": "old-1"})
        silent, _ = agents.create(conn, "lb-1", {"hostname": "lb-1"})
        agents.seen(conn, plain, applied_hash="a" * 64)
        agents.seen(conn, forged, applied_hash=HOSTILE)
        agents.seen(conn, odd, applied_hash="b" * 64, tampered=True)
        assert agents.revoke(conn, gone)
        conn.execute(sa.update(agents.T).where(agents.T.c.id == gone).values(online=False, tampered=True))
        conn.execute(
            sa.update(agents.T).where(agents.T.c.id == broken).values(errors=["nft: bad"], online=False)
        )
        conn.execute(sa.update(agents.T).where(agents.T.c.id == silent).values(online=False))
    with db.read() as conn:
        counted = agents.tally(conn)
    assert sorted(counted.applied, key=repr) == sorted(
        [("web-1", "a" * 64), ("app-1", HOSTILE), ("lb-1", None)], key=repr
    )
    assert (counted.tampered, counted.failed, counted.offline) == (1, 1, 2)  # the revoked one counts nowhere


def test_silent_agents_are_marked_offline_in_one_statement_each_once(db: database.Database) -> None:
    with db.write() as conn:
        ids = {
            name: agents.create(conn, name, {"hostname": name})[0] for name in ("a-1", "b-1", "c-1", "d-1")
        }
        conn.execute(
            sa.update(agents.T).where(agents.T.c.workload.in_(["a-1", "b-1", "c-1"])).values(last_seen=100.0)
        )
        conn.execute(sa.update(agents.T).where(agents.T.c.workload == "c-1").values(online=False))
    with db.write() as conn:
        gone = agents.mark_offline(conn, silent_since=200.0)
    assert sorted((a["workload"], a["last_seen"]) for a in gone) == [("a-1", 100.0), ("b-1", 100.0)]
    assert {a["id"] for a in gone} == {ids["a-1"], ids["b-1"]}
    with db.write() as conn:
        assert agents.mark_offline(conn, silent_since=200.0) == []  # each once
        assert agents.tally(conn).offline == 3  # d-1 was seen just now
