"""SQLite write transactions of one process queue in the process (`Database.write`), not in
SQLite's busy handler: with SQLite's own busy timeout at zero, where any writer that met another
inside SQLite would fail at once, concurrent writers all commit, one after the other. A writer that
waits past `BUSY_SECONDS` goes on to SQLite, which refuses it as before ("database is locked")."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from microseg.store import database, events, migrate


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[database.Database]:
    """A migrated SQLite database whose connections never wait inside SQLite."""
    db = database.Database(database.sqlite_url(tmp_path))
    migrate.upgrade(db)

    @sa.event.listens_for(db.engine, "connect")
    def no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    db.engine.dispose()  # the pooled connections were made before the listener
    yield db
    db.dispose()


def write_slowly(db: database.Database, name: str, hold: float, failures: list[BaseException]) -> None:
    try:
        with db.write() as conn:
            events.add(conn, "test", name, "held")
            time.sleep(hold)  # inside the transaction: the others must wait for the commit
    except BaseException as exc:
        failures.append(exc)


def test_concurrent_writers_of_one_process_queue_and_all_commit(impatient: database.Database) -> None:
    failures: list[BaseException] = []
    threads = [
        threading.Thread(target=write_slowly, args=(impatient, f"w{i}", 0.05, failures)) for i in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    with impatient.read() as conn:
        assert sorted(e["workload"] for e in events.query(conn)) == [f"w{i}" for i in range(6)]


def test_a_writer_waits_no_longer_than_sqlite_would(
    impatient: database.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "BUSY_SECONDS", 0.2)
    failures: list[BaseException] = []
    holder = threading.Thread(target=write_slowly, args=(impatient, "holder", 1.0, failures))
    holder.start()
    time.sleep(0.1)  # the holder is inside its transaction
    started = time.monotonic()
    with pytest.raises(sa.exc.OperationalError, match="database is locked"), impatient.write() as conn:
        events.add(conn, "test", "late", "never stored")
    assert time.monotonic() - started < 0.8  # it did not wait for the holder to finish
    holder.join()
    assert failures == []


def test_the_write_ahead_log_is_checkpointed_between_writes(tmp_path: Path) -> None:
    """SQLite's own checkpoint (inside a commit, every 4 MB) is off; the database checkpoints every
    `CHECKPOINT_EVERY` writes instead, so the log stays near that many transactions long."""
    db = database.Database(database.sqlite_url(tmp_path))
    migrate.upgrade(db)
    wal = tmp_path / "microseg.db-wal"
    try:
        for i in range(5 * database.CHECKPOINT_EVERY):
            with db.write() as conn:
                events.add(conn, "test", f"w{i}", "x" * 100_000)
        assert wal.stat().st_size < 2 * database.CHECKPOINT_EVERY * 150_000
        with db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
            assert len(events.query(conn, limit=1000)) == 5 * database.CHECKPOINT_EVERY
    finally:
        db.dispose()


def test_a_failed_checkpoint_does_not_fail_the_write_it_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db = database.Database(database.sqlite_url(tmp_path))
    migrate.upgrade(db)
    engine = db.engine

    class FailingSecondConnect:
        """The write's connection works; the checkpoint's, the next one, fails."""

        def __init__(self) -> None:
            self.calls = 0

        def connect(self) -> sa.Connection:
            self.calls += 1
            if self.calls == 2:
                raise sqlite3.OperationalError("disk I/O error")
            return engine.connect()

    monkeypatch.setattr(database, "CHECKPOINT_EVERY", 1)
    monkeypatch.setattr(db, "engine", FailingSecondConnect())
    try:
        with db.write() as conn:
            events.add(conn, "test", "kept", "committed before the checkpoint")
        assert "checkpoint failed" in caplog.text
        with engine.connect() as conn:
            assert [e["workload"] for e in events.query(conn)] == ["kept"]
    finally:
        engine.dispose()
