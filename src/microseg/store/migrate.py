"""Alembic migrations, run from code: at server start and by `microseg db upgrade`.

The scripts live in the package (`microseg/store/migrations`), so an installed microseg migrates
its database without an alembic.ini. Concurrent starts (two replicas on one PostgreSQL) are
serialized by an advisory lock, so the second one finds the schema already current.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from microseg.store import database

HEAD = "head"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "microseg.store:migrations")
    return cfg


def upgrade(db: database.Database, revision: str = HEAD) -> str:
    """Bring the schema to `revision` (default: the newest); return the revision now current."""
    cfg = _config()
    with db.engine.connect().execution_options(**{database.WRITE: True}) as conn, conn.begin():
        db.lock(conn, "microseg-migrate")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current(db) or ""


def current(db: database.Database) -> str | None:
    """The schema revision the database is at (None: not migrated yet)."""
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str:
    """The newest revision this microseg knows."""
    rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert rev is not None  # the package always ships at least the initial revision
    return rev
