"""The analytics read stored summaries as plain value rows (`summaries.records`): the same flows as
from the dict rows of `summaries.query`, and stored rows that do not check out are skipped and
counted, on SQLite and PostgreSQL."""

from __future__ import annotations

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


def test_records_are_the_query_rows_values_with_none_for_the_markers(db: database.Database) -> None:
    store(db)
    with db.read() as conn:
        values, rows = summaries.records(conn), summaries.query(conn)
    assert [tuple(v) for v in values] == [tuple(r[k] for k in summaries.RECORD_COLUMNS) for r in rows]
    assert summaries.RECORD_COLUMNS == flowset.FIELDS  # the two sides of the contract agree
    assert any(v[5] is None and v[7] is None and v[9] is None for v in values)


def test_records_keep_the_window(db: database.Database) -> None:
    store(db)
    with db.read() as conn:
        later = summaries.records(conn, since=HOUR + 3600)
        earlier = summaries.records(conn, until=HOUR + 3600)
    assert [v[0] for v in later] == [HOUR + 3600]
    assert sorted(v[0] for v in earlier) == [HOUR] * 3


def test_the_analyses_read_records_as_they_read_dict_rows(db: database.Database) -> None:
    store(db)
    with db.read() as conn:
        values, rows = summaries.records(conn), summaries.query(conn)
    assert flowset.flow_set(values, ENGINE) == flowset.flow_set(rows, ENGINE)
    assert depmap.build(values, ENGINE, ENGINE, ("app",)) == depmap.build(rows, ENGINE, ENGINE, ("app",))
    assert simulate.simulate(values, ENGINE, ENGINE) == simulate.simulate(rows, ENGINE, ENGINE)


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
    assert window.skipped == 2
    assert [(f.dport, f.client_process) for f in window.distinct] == [(None, None), (8443, None)]
    assert simulate.simulate(values, ENGINE, ENGINE).to_json()["skippedRows"] == 2
