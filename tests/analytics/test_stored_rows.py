"""The analytics read stored summaries as plain value rows (`summaries.records`): the same flows as
from the dict rows of `summaries.query`, and stored rows that do not check out are skipped and
counted, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from microseg.analytics import depmap, flowset, simulate
from microseg.store import database, migrate, summaries
from tests import postgres
from tests.analytics import APP1, BUCKET, WEB1, example_engine

ENGINE = example_engine()
VERDICTS = ("allowed", "blocked", "would-block")
HOUR = summaries.bucket_of(BUCKET)
"""The start of an hour bucket."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[database.Database]:
    if request.param == "sqlite":
        handle = database.Database(database.sqlite_url(tmp_path))
        migrate.upgrade(handle)
        yield handle
        handle.dispose()
        return
    with postgres.schema() as url:
        handle = database.Database(url)
        migrate.upgrade(handle)
        yield handle
        handle.dispose()


def record(direction: str, dport: int | None, first: float, **extra: Any) -> dict[str, Any]:
    """One agent flow record between WEB1 and APP1."""
    return {"direction": direction, "src": WEB1, "dst": APP1, "dport": dport, "proto": "tcp",
            "first_seen": first, "last_seen": first + 30, "verdict": "allowed", "connections": 2,
            "bytes": 300, "packets": 6, **extra}  # fmt: skip


def store(db: database.Database) -> None:
    """Two hours of a connection both ends report, and one portless record without process or rule."""
    with db.write() as conn:
        summaries.add_batch(db, conn, "prod-app-1", [record("in", 8443, HOUR + 10, process="java"),
                                                    record("in", 8443, HOUR + 3610, process="java"),
                                                    record("in", None, HOUR + 20)])  # fmt: skip
        summaries.add_batch(db, conn, "prod-web-1", [record("out", 8443, HOUR + 12, process="curl",
                                                            rule="application/web-to-app")])  # fmt: skip


def fold_in_python(rows: list[dict[str, Any]], bucket: float = 0.0) -> list[tuple[Any, ...]]:
    """What `records` must give for the dict rows of `summaries.query`: one row per key without the
    hour, times widened, sums added, the stored rows counted (the reference the SQL is held to)."""
    folded: dict[tuple[Any, ...], list[Any]] = {}
    for r in rows:
        key = tuple(r[k] for k in summaries.RECORD_COLUMNS[1:10])
        found = folded.get(key)
        if found is None:
            folded[key] = [r["firstSeen"], r["lastSeen"], r["connections"], r["bytes"], r["packets"], 1]
        else:
            found[0], found[1] = min(found[0], r["firstSeen"]), max(found[1], r["lastSeen"])
            for i, k in enumerate(("connections", "bytes", "packets"), start=2):
                found[i] = min(found[i] + r[k], summaries.SUM_MAX)
            found[5] += 1
    return sorted(((bucket, *key, *totals) for key, totals in folded.items()), key=repr)


def test_records_fold_the_window_across_hours_with_none_for_the_markers(db: database.Database) -> None:
    store(db)
    with db.read() as conn:
        values, rows = summaries.records(conn), summaries.query(conn)
    assert len(rows) == 4 and len(values) == 3  # the connection's two hours are one row
    assert sorted((tuple(v) for v in values), key=repr) == fold_in_python(rows)
    assert summaries.RECORD_COLUMNS[:-1] == flowset.FIELDS  # the two sides of the contract agree
    assert any(v[5] is None and v[7] is None and v[9] is None for v in values)


def test_records_fold_many_hours_reporters_and_keys_as_python_does(db: database.Database) -> None:
    chance = random.Random(7)
    with db.write() as conn:
        for reporter in ("prod-app-1", "prod-web-1", "prod-db-1"):
            batch = [record(chance.choice(("in", "out")), chance.choice((8443, 80, None)),
                            HOUR + 3600 * chance.randrange(6) + chance.randrange(3000),
                            process=chance.choice((None, "java", "curl")), verdict=chance.choice(VERDICTS),
                            connections=chance.randrange(5), bytes=chance.randrange(10**6))
                     for _ in range(120)]  # fmt: skip
            summaries.add_batch(db, conn, reporter, batch)
    with db.read() as conn:
        rows = summaries.query(conn)
        values = summaries.records(conn)
        since = HOUR + 7200
        windowed = summaries.records(conn, since=since)
        windowed_rows = summaries.query(conn, since=since)
    assert len(values) < len(rows)  # hours were folded
    assert sorted((tuple(v) for v in values), key=repr) == fold_in_python(rows)
    assert sorted((tuple(v) for v in windowed), key=repr) == fold_in_python(windowed_rows, since)


def test_records_add_up_to_the_largest_count_never_past_it(db: database.Database) -> None:
    """A reporter may send counts up to 2**62 a record: their sum over hours saturates, it never
    fails the read (SQLite's integer sum() would raise) nor wraps."""
    with db.write() as conn:
        summaries.add_batch(db, conn, "prod-app-1", [record("in", 8443, HOUR + 3600 * h, connections=2**62,
                                                            bytes=2**62, packets=2**62) for h in range(3)])  # fmt: skip
    with db.read() as conn:
        (value,) = summaries.records(conn)
    assert tuple(value[12:]) == (summaries.SUM_MAX, summaries.SUM_MAX, summaries.SUM_MAX, 3)
    assert flowset.flow_set([value], ENGINE).distinct[0].connections == summaries.SUM_MAX


def test_records_keep_the_window(db: database.Database) -> None:
    store(db)
    with db.read() as conn:
        later = summaries.records(conn, since=HOUR + 3600)
        earlier = summaries.records(conn, until=HOUR + 3600)
    assert [(v[0], v[12], v[15]) for v in later] == [(HOUR + 3600, 2, 1)]  # the window's own bucket
    assert sorted((v[0], v[15]) for v in earlier) == [(0.0, 1)] * 3


def test_the_analyses_read_records_as_the_window_of_dict_rows(db: database.Database) -> None:
    """The same connections as the dict rows, each once for the window: the two hours of the
    connection are one flow, its connections added."""
    store(db)
    with db.read() as conn:
        values, rows = summaries.records(conn), summaries.query(conn)
    as_one_bucket = [r | {"bucket": 0.0} for r in rows]
    assert flowset.flow_set(values, ENGINE).distinct == flowset.flow_set(as_one_bucket, ENGINE).distinct
    assert depmap.build(values, ENGINE, ENGINE, ("app",)) == depmap.build(
        as_one_bucket, ENGINE, ENGINE, ("app",)
    )
    per_hour = simulate.simulate(rows, ENGINE, ENGINE).to_json()
    window = simulate.simulate(values, ENGINE, ENGINE).to_json()
    assert [g["connections"] for g in window["groups"]] == [g["connections"] for g in per_hour["groups"]]
    assert sum(g["flows"] for g in window["groups"]) == 2  # connections, not connection-hours
    assert sum(g["flows"] for g in per_hour["groups"]) == 3


def test_stored_rows_that_do_not_check_out_are_skipped_and_counted(db: database.Database) -> None:
    store(db)
    with db.write() as conn:  # what a server before ingest checked them could store
        conn.execute(
            sa.update(summaries.T).where(summaries.T.c.direction == "out").values(src="not-an-address")
        )
        conn.execute(sa.update(summaries.T).where(summaries.T.c.bucket == HOUR + 3600).values(last_seen=0.0))
    with db.read() as conn:
        values = summaries.records(conn)
    window = flowset.flow_set(values, ENGINE)
    assert window.skipped == 2  # the bad hour is folded apart from the good one, not into it
    assert [(f.dport, f.client_process) for f in window.distinct] == [(None, None), (8443, None)]
    assert simulate.simulate(values, ENGINE, ENGINE).to_json()["skippedRows"] == 2


def test_a_skipped_fold_counts_every_stored_row_in_it(db: database.Database) -> None:
    store(db)
    with db.write() as conn:
        conn.execute(sa.update(summaries.T).where(summaries.T.c.dport == 8443).values(dst="not-an-address"))
        conn.execute(sa.update(summaries.T).where(summaries.T.c.dport == -1).values(last_seen=float("inf")))
    with db.read() as conn:
        values = summaries.records(conn)
    window = flowset.flow_set(values, ENGINE)
    assert (window.skipped, window.distinct) == (4, ())  # the two hours of one fold count as two
