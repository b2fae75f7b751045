"""The store on real SQLite and real PostgreSQL: migrations build exactly the schema the code
uses, the audit log refuses changes, batches and one-time tokens are used once."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from microseg.store import audit, database, flows, migrate, schema, tokens, versions


def test_migrations_build_exactly_the_schema_the_code_uses(db: database.Database) -> None:
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert diffs == []
    assert migrate.current(db) == migrate.head()


def test_upgrading_twice_changes_nothing(db: database.Database) -> None:
    assert migrate.upgrade(db) == migrate.head()
    with db.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM state")).scalar_one() == 1


def test_the_audit_log_is_append_only(db: database.Database) -> None:
    with db.write() as conn:
        audit.record(conn, "alice", "update", "Rule/application/web", {"before": None, "after": {}})
    for statement in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM audit"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.write() as conn:
            conn.execute(sa.text(statement))
    with db.read() as conn:
        rows = audit.query(conn)
    assert [(r["actor"], r["target"]) for r in rows] == [("alice", "Rule/application/web")]


def test_a_flow_batch_is_stored_once(db: database.Database) -> None:
    record = {"direction": "in", "src": "10.0.0.1", "dst": "10.0.0.2", "dport": 443, "proto": "tcp",
              "process": None, "user": None, "bytes": 1, "packets": 1, "first_seen": 1.0, "last_seen": 2.0,
              "verdict": "allowed", "rule": None}  # fmt: skip
    outcomes = []
    for _ in range(2):
        with db.write() as conn:
            outcomes.append(flows.store_batch(db, conn, flows.Batch.of("a1", "b1", "w", [record] * 3)))
    with db.read() as conn:
        assert flows.counts(conn) == (1, 3)
    assert outcomes == [True, False]


def test_a_one_time_enrollment_token_works_once(db: database.Database) -> None:
    with db.write() as conn:
        _, once = tokens.create_enrollment(conn, "once", {}, mode="visibility", reusable=False,
                                           expires_at=None, actor="t")  # fmt: skip
        _, many = tokens.create_enrollment(conn, "many", {"env": "dev"}, mode="alert", reusable=True,
                                           expires_at=None, actor="t")  # fmt: skip
        _, old = tokens.create_enrollment(
            conn, "old", {}, mode="alert", reusable=True, expires_at=1.0, actor="t"
        )
    with db.write() as conn:
        assert tokens.consume_enrollment(conn, once) is not None
        assert tokens.consume_enrollment(conn, once) is None
        assert tokens.consume_enrollment(conn, many) is not None
        assert tokens.consume_enrollment(conn, many)["uses"] == 2  # type: ignore[index]
        assert tokens.consume_enrollment(conn, old) is None
        assert tokens.consume_enrollment(conn, once + "x") is None


def test_version_numbers_count_up_from_one(db: database.Database) -> None:
    for expected in (1, 2, 3):
        with db.write() as conn:
            db.lock(conn, "provision")
            number = versions.next_number(conn)
            versions.insert(conn, versions.new(number, note="n", actor="t", documents=[], changes={}))
        assert number == expected
    with db.read() as conn:
        assert [v.number for v in versions.listing(conn)] == [3, 2, 1]
