"""The database handle: one SQLAlchemy engine with each dialect's settings, and transactions.

Used by the server for every request: `read()` for a consistent snapshot, `write()` for a change
that commits whole or not at all. SQLite runs in WAL mode (readers never wait for the writer) and
starts write transactions with BEGIN IMMEDIATE, so two writers queue instead of failing half way
(the writers of one process queue in a lock of their own first: SQLite's busy handler sleeps);
PostgreSQL serializes provisioning with a transaction-scoped advisory lock (`lock`), never with
process memory, so any number of replicas can share one database.

SQLite's files are owner-only (0600, in a data directory created 0700): they hold the token
digests, the audit log and the whole policy, which no other local user should read.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
import stat
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

log = logging.getLogger(__name__)

WRITE = "microseg_write"
"""Execution option that marks a connection's transaction as a write (SQLite: BEGIN IMMEDIATE)."""


BUSY_SECONDS = 30.0
"""How long a SQLite writer waits for another before giving up ("database is locked")."""
CHECKPOINT_EVERY = 8
"""SQLite: write transactions of this process between two checkpoints of the write-ahead log."""

SIDECARS = ("", "-wal", "-shm", "-journal")
"""Suffixes of the files SQLite keeps for one database: each holds table data."""


def sqlite_url(data_dir: str | Path) -> str:
    """The default database: `microseg.db` in the data directory (created 0700 when missing)."""
    path = private_directory(data_dir)
    return f"sqlite:///{path / 'microseg.db'}"


def private_directory(data_dir: str | Path) -> Path:
    """The resolved data directory, created owner-only when missing (its parents as the umask says).

    An existing directory keeps its mode: the operator chose it, and the files in it are private
    on their own (`_private_sqlite_files`)."""
    path = Path(data_dir).expanduser().resolve()
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    return path


class Database:
    """An engine plus the transaction helpers every store module uses."""

    def __init__(self, url: str, *, pool_size: int = 20) -> None:
        self.url = sa.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self._writers = threading.RLock() if self.is_sqlite else None
        """SQLite: this process's write transactions queue here rather than in SQLite's busy
        handler, which polls with sleeps growing to 100 ms (four concurrent flow uploads waited up
        to a second for a lock that was free most of the time). Other processes still queue in the
        busy handler; PostgreSQL writers do not wait for each other."""
        self._writes = itertools.count(1)
        if self.is_sqlite:
            _private_sqlite_files(self.url.database)
            self.engine = sa.create_engine(
                self.url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=pool_size
            )
            _configure_sqlite(self.engine)
        else:
            self.engine = sa.create_engine(
                self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A transaction for reading (rolled back at the end: it changes nothing)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A transaction that commits when the block ends normally and rolls back otherwise
        (SQLite: every `CHECKPOINT_EVERY`-th one is followed by a checkpoint, before the next
        writer's turn)."""
        with self._queued():
            with self.engine.connect().execution_options(**{WRITE: True}) as conn, conn.begin():
                yield conn
            if self._writers is not None and next(self._writes) % CHECKPOINT_EVERY == 0:
                self._checkpoint()

    def _checkpoint(self) -> None:
        """Copy the write-ahead log into the database file, as far as readers allow, without
        waiting for any reader. Done here, after the commit, rather than inside whichever commit
        crosses SQLite's own threshold (its automatic checkpoint is off, `_configure_sqlite`): a
        page rewritten by several transactions is copied once.

        It runs while the writers' queue is still held: a checkpoint that races the next writer
        never finds the log fully copied, and SQLite starts the log over only when it is, so under
        a steady stream of writes (flow ingest from four agents) the log grew by every commit
        (500 MB for 200,000 flow records) and each commit appended to an ever larger file. Queued,
        the copy usually completes and the next writer starts the log from its beginning (30 MB in
        the same run, at no measurable cost to its throughput). A checkpoint that fails is logged
        and left to the next one: the write it follows has committed."""
        try:
            with self.engine.connect() as conn:
                conn.connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").close()  # type: ignore[union-attr]
        except (sa.exc.DBAPIError, sqlite3.Error):
            log.warning("SQLite checkpoint failed; the next write tries again", exc_info=True)

    @contextmanager
    def _queued(self) -> Iterator[None]:
        """Wait for this process's other SQLite writers; after `BUSY_SECONDS` go on regardless, to
        SQLite's own busy timeout, so a writer waiting on another thread never hangs where it
        would have failed."""
        got = self._writers is not None and self._writers.acquire(timeout=BUSY_SECONDS)
        try:
            yield
        finally:
            if got:
                assert self._writers is not None
                self._writers.release()

    def lock(self, conn: sa.Connection, name: str) -> None:
        """Serialize this transaction with every other one taking the same lock, in any process.

        SQLite write transactions are already serialized by BEGIN IMMEDIATE."""
        if not self.is_sqlite:
            key = zlib.crc32(name.encode())
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    def insert_ignoring_duplicates(self, table: sa.Table) -> Any:
        """INSERT that silently skips rows whose primary key already exists."""
        if self.is_sqlite:
            return sqlite.insert(table).on_conflict_do_nothing()
        return postgresql.insert(table).on_conflict_do_nothing()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _private_sqlite_files(database: str | None) -> None:
    """Make the database file owner-only before SQLite opens it (SQLite gives its -wal and -shm
    files the database file's mode); files an older release left readable to others are tightened.

    In-memory databases and `file:` URIs are left to the caller."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    with contextlib.suppress(FileExistsError, FileNotFoundError):  # no directory: SQLite says so
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    for suffix in SIDECARS:
        found = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            status = found.lstat()
            if status.st_mode & 0o077 and status.st_uid == os.geteuid() and stat.S_ISREG(status.st_mode):
                found.chmod(0o600)


def _configure_sqlite(engine: sa.Engine) -> None:
    """WAL, a busy timeout, and our own BEGIN (the driver's implicit transactions are off)."""

    @sa.event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process; only a power loss can cost the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA wal_autocheckpoint=0")  # `Database._checkpoint` does it, between writes
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
