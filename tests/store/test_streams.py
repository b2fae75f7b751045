"""SIEM streaming's state on real SQLite and PostgreSQL: cursors, the one-holder lease, reading
the sources in id order (flows by record, past batches with nothing to send), young id gaps held
back, the bound's skip, and SQLite's restarted flow ids."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from microseg.store import audit, database, events, flows, schema, streams
from microseg.store.streams import Cursor

START = Cursor(0, 0.0)


def record(verdict: str, port: int = 22) -> dict[str, Any]:
    now = time.time()
    return {"direction": "in", "src": "192.0.2.1", "dst": "10.0.0.1", "dport": port, "proto": "tcp",
            "first_seen": now, "last_seen": now, "verdict": verdict}  # fmt: skip


def batch(db: database.Database, name: str, *verdicts: str) -> None:
    with db.write() as conn:
        made = flows.Batch.of("agent-1", name, "web-1", [record(v, 1000 + i) for i, v in enumerate(verdicts)])
        assert flows.store_batch(db, conn, made)


def add_events(db: database.Database, count: int) -> None:
    with db.write() as conn:
        made = [{"kind": "tamper", "workload": "w", "message": f"e{i}", "details": {}} for i in range(count)]
        events.add_many(conn, made)


def test_a_cursor_is_kept_per_sink_and_source(db: database.Database) -> None:
    with db.write() as conn:
        assert streams.cursor(conn, "s1", "events") is None
        streams.save(conn, "s1", "events", Cursor(5, 1.5), 10.0)
        streams.save(conn, "s1", "events", Cursor(7, 2.5), 11.0)
        streams.save(conn, "s2", "events", Cursor(1, 0.5), 11.0)
    with db.read() as conn:
        assert streams.cursor(conn, "s1", "events") == Cursor(7, 2.5)
        assert streams.cursor(conn, "s2", "events") == Cursor(1, 0.5)
        assert streams.cursor(conn, "s1", "audit") is None


def test_one_holder_per_sink_until_its_lease_ends_or_is_released(db: database.Database) -> None:
    def take(holder: str, now: float) -> bool:
        with db.write() as conn:
            return streams.take_lease(db, conn, "sink", holder, now=now, ttl=30)

    assert take("a", 100) and not take("b", 101) and take("a", 110)  # a renews; b waits
    with db.write() as conn:
        assert streams.renew_lease(conn, "sink", "a", 120, 30)
    assert not take("b", 149) and take("b", 151)  # a's lease ran out at 150
    with db.write() as conn:
        assert not streams.renew_lease(conn, "sink", "a", 152, 30)  # a learns it lost the sink
        streams.release_lease(conn, "sink", "b")
    assert take("a", 153)


def test_events_and_audit_are_read_in_id_order_from_the_cursor(db: database.Database) -> None:
    add_events(db, 5)
    with db.write() as conn:
        audit.record(conn, "alice", "provision", "version/1", {"note": "v1"})
    with db.read() as conn:
        first = streams.read(conn, "events", START, limit=3)
        rest = streams.read(conn, "events", Cursor(first.position, first.at), limit=3)
        done = streams.read(conn, "events", Cursor(rest.position, rest.at), limit=3)
        changes = streams.read(conn, "audit", START, limit=10)
    assert [r["message"] for r in first.rows] == ["e0", "e1", "e2"] and first.full
    assert [r["message"] for r in rest.rows] == ["e3", "e4"] and not rest.full
    assert done.rows == [] and done.position == rest.position
    assert [(r["actor"], r["action"]) for r in changes.rows] == [("alice", "provision")]


def test_flows_are_read_by_record_with_the_chosen_verdicts(db: database.Database) -> None:
    batch(db, "b1", "allowed", "blocked", "would-block", "blocked")
    batch(db, "b2", "allowed", "allowed")
    refused = frozenset({"blocked", "would-block"})
    with db.read() as conn:
        first = streams.read(conn, "flows", START, limit=2, verdicts=refused)
        rest = streams.read(conn, "flows", Cursor(first.position, first.at), limit=2, verdicts=refused)
        every = streams.read(conn, "flows", START, limit=100)
        seq2 = conn.execute(sa.select(sa.func.max(flows.BATCHES.c.seq))).scalar_one()
    assert [r["verdict"] for r in first.rows] == ["blocked", "would-block"] and first.full
    assert [r["verdict"] for r in rest.rows] == ["blocked"]
    assert first.position == first.rows[-1]["id"] and first.rows[0]["workload"] == "web-1"
    assert rest.position == seq2 * flows.SPAN + flows.SPAN - 1  # past b2, which holds nothing to send
    assert [r["dport"] for r in every.rows] == [1000, 1001, 1002, 1003, 1000, 1001]


def test_rows_behind_a_young_id_gap_wait_until_it_settles(db: database.Database) -> None:
    now = time.time()
    with db.write() as conn:
        conn.execute(sa.insert(schema.events), [
            {"id": 1, "at": now, "kind": "tamper", "workload": None, "message": "one", "details": {}},
            {"id": 3, "at": now, "kind": "tamper", "workload": None, "message": "three", "details": {}},
        ])  # fmt: skip
    with db.read() as conn:
        young = streams.read(conn, "events", START, limit=10, settle_before=now - 10)
        settled = streams.read(conn, "events", START, limit=10, settle_before=now + 1)
        in_order = streams.read(conn, "events", START, limit=10)  # SQLite: ids commit in order
    assert [r["id"] for r in young.rows] == [1] and young.position == 1
    assert [r["id"] for r in settled.rows] == [1, 3] == [r["id"] for r in in_order.rows]


def test_a_backlog_over_the_bound_skips_the_oldest(db: database.Database) -> None:
    add_events(db, 10)
    with db.read() as conn:
        assert streams.backlog(conn, "events", START, 10) is None
        skip = streams.backlog(conn, "events", START, 3)
        ids = [r["id"] for r in streams.read(conn, "events", START, limit=10).rows]
    assert skip is not None and (skip.position, skip.skipped, skip.first) == (ids[6], 7, ids[0])


def test_a_flow_backlog_counts_only_the_records_that_would_be_sent(db: database.Database) -> None:
    for n in range(4):
        batch(db, f"b{n}", "blocked", "blocked", "allowed")
    blocked = frozenset({"blocked"})
    with db.read() as conn:
        assert streams.backlog(conn, "flows", START, 8, blocked) is None
        skip = streams.backlog(conn, "flows", START, 5, blocked)
        seqs = conn.execute(sa.select(flows.BATCHES.c.seq).order_by(flows.BATCHES.c.seq)).scalars().all()
    assert skip is not None and skip.skipped == 4  # two batches dropped, two (4 records) kept
    assert skip.position == seqs[1] * flows.SPAN + flows.SPAN - 1 and skip.first == seqs[0] * flows.SPAN


def test_head_is_past_everything_stored(db: database.Database) -> None:
    add_events(db, 2)
    batch(db, "b1", "blocked")
    with db.read() as conn:
        assert streams.head(conn, "audit") == START
        assert streams.read(conn, "events", streams.head(conn, "events"), limit=5).rows == []
        assert streams.read(conn, "flows", streams.head(conn, "flows"), limit=5).rows == []


def test_a_cursor_above_every_flow_batch_follows_the_restarted_ids(db: database.Database) -> None:
    batch(db, "b1", "blocked")
    with db.read() as conn:
        assert streams.rewound(conn, "flows", streams.head(conn, "flows")) is None
        far = Cursor(1000 * flows.SPAN, time.time() - 60)  # batches were dropped, ids started again
        assert streams.rewound(conn, "flows", far) == Cursor(0, far.at)  # b1 came later: it is new
        assert streams.rewound(conn, "flows", Cursor(far.position, time.time() + 1)) is not None
        assert streams.rewound(conn, "events", far) is None
