"""The store tests' database: a migrated SQLite file, and a throw-away PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from microseg.store import database, migrate
from tests import postgres


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
