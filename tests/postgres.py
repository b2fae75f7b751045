"""A throw-away PostgreSQL schema per test: created in database `test` on 127.0.0.1:5432 and
dropped afterwards, so parallel runs and other engineers' runs never collide."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from tests.conftest import require

ADMIN_URL = os.environ.get("MICROSEG_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def available() -> bool:
    """Whether the test PostgreSQL answers."""
    engine = sa.create_engine(ADMIN_URL, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


@contextmanager
def schema() -> Iterator[str]:
    """A URL whose connections use a fresh, empty schema (dropped at the end)."""
    require(available(), f"needs PostgreSQL at {ADMIN_URL} (start it: pg_ctlcluster 15 main start)")
    name = f"ms_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    try:
        yield f"{ADMIN_URL}?options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()
