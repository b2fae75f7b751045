"""Flow summaries on real SQLite and real PostgreSQL: batches fold into one row per hour bucket and
key, queries filter and page, retention drops old summaries and raw batches together."""

from __future__ import annotations

from typing import Any

from microseg.store import database, flows, summaries

HOUR = 3600.0
T0 = 1_700_000_000.0 - 1_700_000_000.0 % HOUR
"""The start of an hour bucket."""


def record(at: float = T0 + 10, **more: Any) -> dict[str, Any]:
    return {"direction": "in", "src": "10.0.0.1", "dst": "10.0.0.2", "dport": 443, "proto": "tcp",
            "process": "/usr/sbin/nginx", "bytes": 100, "packets": 2, "connections": 1, "first_seen": at,
            "last_seen": at + 5, "verdict": "allowed", **more}  # fmt: skip


def add(db: database.Database, *records: dict[str, Any], reporter: str = "web-1") -> int:
    with db.write() as conn:
        return summaries.add_batch(db, conn, reporter, records)


def everything(db: database.Database, **filters: Any) -> list[dict[str, Any]]:
    with db.read() as conn:
        return summaries.query(conn, filters=summaries.Filters(**filters))


def test_batches_fold_into_one_row_per_hour_and_key(db: database.Database) -> None:
    assert add(db, record(), record(T0 + 100, bytes=50), record(T0 + HOUR + 1)) == 2
    add(db, record(T0 + 5), record(T0 + 200, connections=3))
    rows = everything(db)
    assert [(r["bucket"], r["connections"], r["bytes"], r["packets"]) for r in rows] == [
        (T0, 6, 350, 8),
        (T0 + HOUR, 1, 100, 2),
    ]
    first = rows[0]
    assert (first["firstSeen"], first["lastSeen"]) == (T0 + 5, T0 + 205)
    assert set(first) == {"bucket", "reporter", "direction", "src", "dst", "dport", "proto", "process",
                          "verdict", "rule", "firstSeen", "lastSeen", "connections", "bytes",
                          "packets"}  # fmt: skip


def test_each_key_field_keeps_rows_apart_and_none_is_a_key_like_any_other(db: database.Database) -> None:
    variants: list[dict[str, Any]] = [{"direction": "out"}, {"src": "10.0.0.9"}, {"dst": "10.0.0.9"}, {"dport": 80},
                {"proto": "udp"}, {"process": "sshd"}, {"verdict": "blocked"}, {"rule": "app/web"}]  # fmt: skip
    bare: dict[str, Any] = {"dport": None, "process": None, "rule": None}
    for _ in range(2):  # the second round must find every row again, the None ones too
        add(db, record(), *(record(**v) for v in variants), record(**bare))
        add(db, record(), reporter="db-1")
    rows = everything(db)
    assert len(rows) == len(variants) + 3 and {r["connections"] for r in rows} == {2}
    none = [r for r in rows if r["dport"] is None]
    assert len(none) == 1 and (none[0]["process"], none[0]["rule"]) == (None, None)


def test_filters_port_protocol_verdict_process_glob_window_and_a_predicate(db: database.Database) -> None:
    add(db, record(), record(dport=22, process="/usr/sbin/sshd", verdict="blocked"),
        record(T0 + 2 * HOUR, proto="udp", dport=53, process=None),
        record(T0 + 5 * HOUR, src="192.0.2.7", verdict="would-block"))  # fmt: skip

    def ports(**filters: Any) -> list[int | None]:
        return [r["dport"] for r in everything(db, **filters)]

    assert ports(port=22) == [22] and ports(proto="udp") == [53] and ports(verdict="would-block") == [443]
    assert ports(process="*nginx") == [443, 443] and ports(process="/usr/sbin/*") == [443, 22, 443]
    assert ports(process="nginx") == []  # a glob matches the whole name or path
    assert ports(since=T0 + HOUR) == [53, 443] and ports(until=T0 + HOUR) == [443, 22]
    assert ports(since=T0 + 2 * HOUR, until=T0 + 2 * HOUR + 1) == [53]
    assert ports(keep=lambda r: r["src"].startswith("192.")) == [443]
    with db.read() as conn:
        assert len(summaries.query(conn, T0 + HOUR, T0 + 3 * HOUR)) == 1


def test_pages_cover_every_row_once_while_rows_grow(db: database.Database) -> None:
    add(db, *(record(dport=port) for port in range(1, 6)))
    seen: list[int | None] = []
    after: int | None = 0
    while after is not None:
        with db.read() as conn:
            rows, after = summaries.page(conn, summaries.Filters(), after, limit=2)
        seen += [r["dport"] for r in rows]
        add(db, record(dport=1), record(dport=5))  # adding to rows keeps their place
    assert seen == [1, 2, 3, 4, 5]
    with db.read() as conn:
        assert summaries.page(conn, summaries.Filters(port=5), 0, limit=1)[1] is None


def test_retention_drops_old_summaries_and_batches_together(db: database.Database) -> None:
    old, new = record(T0), record(T0 + 3 * HOUR)
    with db.write() as conn:
        for name, rec in (("b-old", old), ("b-new", new)):
            assert flows.store_batch(db, conn, flows.Batch.of("a1", name, "web-1", [rec]))
            summaries.add_batch(db, conn, "web-1", [rec])
    with db.write() as conn:
        assert summaries.expire(conn, T0 + HOUR) == (1, 1)
    with db.read() as conn:
        assert flows.counts(conn) == (1, 1) and summaries.counts(conn) == 1
    assert [r["bucket"] for r in everything(db)] == [T0 + 3 * HOUR]
