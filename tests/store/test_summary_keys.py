"""Summary rows are unique by their key's digest (`summaries.key_hash`), on real SQLite and real
PostgreSQL: the digest is fixed (stored rows depend on it), text cannot make two keys encode alike,
a digest shared by two keys refuses the batch instead of adding one key's counts to the other's
row, and migration 0009 gives the rows stored before it the digest that ingest computes now, so
new batches keep adding to them."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from microseg import errors
from microseg.store import database, migrate, summaries
from tests import postgres

HOUR = 3600.0
T0 = 1_700_000_000.0 - 1_700_000_000.0 % HOUR
KEY = summaries.Key(T0, "web-1", "out", "10.0.0.1", "10.0.0.9", 443, "tcp", "nginx", "allowed", "app/web")
MIGRATION = importlib.import_module("microseg.store.migrations.versions.0009_flow_summary_key_hash")


def record(**changed: Any) -> dict[str, Any]:
    base = {"direction": "out", "src": "10.0.0.1", "dst": "10.0.0.9", "dport": 443, "proto": "tcp",
            "process": "nginx", "verdict": "allowed", "rule": "app/web", "first_seen": T0 + 5,
            "last_seen": T0 + 9, "connections": 2, "bytes": 100, "packets": 10}  # fmt: skip
    return {**base, **changed}


def rows_of(db: database.Database, reporter: str) -> list[dict[str, Any]]:
    with db.read() as conn:
        return summaries.query(conn, filters=summaries.Filters(reporter=reporter))


def test_the_digest_of_a_key_is_fixed() -> None:
    """Stored rows keep the digest they were written with: a changed encoding would split every
    stored key from its new batches (it needs a migration, like 0009)."""
    assert summaries.key_hash(KEY).hex() == "f6c7bb2528b8bfb42bc0d2299f27e6d1"
    assert MIGRATION._digest(tuple(KEY), postgres=False) == summaries.key_hash(KEY)
    assert MIGRATION._digest(tuple(KEY), postgres=True) == summaries.key_hash(KEY).hex()


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(KEY._replace(process="", rule="nginx"), id="text-moved-between-fields"),
        pytest.param(KEY._replace(process="nginx|7:app/web", rule=""), id="separator-in-text"),
        pytest.param(KEY._replace(process="nginx|", rule="7:app/web"), id="length-prefix-in-text"),
        pytest.param(KEY._replace(dport=-1), id="no-port"),
        pytest.param(KEY._replace(bucket=T0 + HOUR), id="next-hour"),
        pytest.param(KEY._replace(reporter="web-2"), id="other-reporter"),
    ],
)
def test_keys_that_differ_anywhere_have_different_digests(other: summaries.Key) -> None:
    assert summaries.key_hash(other) != summaries.key_hash(KEY)


def test_a_shared_digest_refuses_the_batch_and_leaves_the_stored_row_alone(
    db: database.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with db.write() as conn:
        summaries.add_batch(db, conn, "web-1", [record()])
    before = rows_of(db, "web-1")
    real = summaries.key_hash
    monkeypatch.setattr(summaries, "key_hash", lambda key: real(KEY))  # every key collides with KEY
    with pytest.raises(errors.PermanentError, match="share one key digest"), db.write() as conn:
        summaries.add_batch(db, conn, "web-1", [record(dport=22)])
    assert rows_of(db, "web-1") == before


def test_the_same_key_again_adds_to_its_row(db: database.Database) -> None:
    for _ in range(2):
        with db.write() as conn:
            summaries.add_batch(db, conn, "web-1", [record()])
    [row] = rows_of(db, "web-1")
    assert (row["connections"], row["bytes"], row["packets"]) == (4, 200, 20)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def at_0008(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[database.Database]:
    """A database migrated to the revision before the digest."""
    if request.param == "sqlite":
        handle = database.Database(database.sqlite_url(tmp_path))
        migrate.upgrade(handle, "0008")
        yield handle
        handle.dispose()
        return
    with postgres.schema() as url:
        handle = database.Database(url)
        migrate.upgrade(handle, "0008")
        yield handle
        handle.dispose()


def test_upgrading_digests_the_rows_stored_before_and_batches_keep_adding_to_them(
    at_0008: database.Database,
) -> None:
    db = at_0008
    old = sa.table("flow_summaries", *(sa.column(c) for c in (*summaries.KEY, "first_seen", "last_seen",
                                                             *summaries.SUMS)))  # fmt: skip
    stored = [
        {**KEY._asdict(), "first_seen": T0 + 5, "last_seen": T0 + 9, "connections": 2, "bytes": 100, "packets": 10},
        {**KEY._replace(dport=-1, process="", rule="")._asdict(), "first_seen": T0, "last_seen": T0 + 1,
         "connections": 1, "bytes": 1, "packets": 1},
    ]  # fmt: skip
    with db.write() as conn:
        conn.execute(sa.insert(old), stored)
    migrate.upgrade(db)
    with db.read() as conn:
        digests = {row.dport: bytes.fromhex(row.key_hash.replace("-", "")) if isinstance(row.key_hash, str)
                   else row.key_hash for row in conn.execute(sa.select(summaries.T))}  # fmt: skip
    assert digests == {
        443: summaries.key_hash(KEY),
        -1: summaries.key_hash(KEY._replace(dport=-1, process="", rule="")),
    }
    with db.write() as conn:
        summaries.add_batch(db, conn, "web-1", [record(), record(dport=None, process=None, rule=None)])
    assert sorted((r["dport"] or -1, r["connections"]) for r in rows_of(db, "web-1")) == [(-1, 3), (443, 4)]
