"""The API under test: a real app over a real database, SQLite and PostgreSQL alike.

Every test that takes `api` runs twice, once per backend (`-m "not postgres"` runs SQLite only).
Requests go over real HTTP to uvicorn on 127.0.0.1, so the lifespan (state watcher, offline
detector), middleware and serialization run as in production.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from microseg.server import app as server_app
from microseg.server import config, runtime
from microseg.store import database, tokens
from tests import postgres
from tests.server import running

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
CONTROL_PLANE = "10.77.0.1:8440"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each backend."""
    if request.param == "sqlite":
        yield database.sqlite_url(tmp_path / "data")
        return
    with postgres.schema() as url:
        yield url


@dataclass
class Api:
    """A client with one token per role; `as_(role)` picks who calls."""

    client: httpx.Client
    db: database.Database
    tokens: dict[str, str] = field(default_factory=dict)
    who: str = "admin"

    def as_(self, who: str) -> Api:
        """The same client calling as another role (or `none`, or a raw token)."""
        return Api(self.client, self.db, self.tokens, who)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        token = self.tokens.get(self.who, self.who)
        out = {} if self.who == "none" else {"Authorization": f"Bearer {token}"}
        return {**out, **(extra or {})}

    def call(self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None,
             **params: Any) -> httpx.Response:  # fmt: skip
        return self.client.request(method, "/api/v1" + path, json=json, headers=self.headers(headers),
                                   params={k.rstrip("_"): v for k, v in params.items()})  # fmt: skip

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.call("GET", path, **params)

    def post(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return self.call("POST", path, json=json, **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return self.call("PUT", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.call("DELETE", path, **kw)


def make_settings(url: str, **more: Any) -> config.ServerSettings:
    """Settings for tests: fast watching, a fixed control-plane endpoint."""
    return config.ServerSettings(database=url, control_plane=(CONTROL_PLANE,), watch_interval=0.05, **more)


@pytest.fixture
def settings(database_url: str) -> config.ServerSettings:
    """Test settings over the fresh database (override in a test module to change them)."""
    return make_settings(database_url)


@pytest.fixture
def api(settings: config.ServerSettings) -> Iterator[Api]:
    """The app over a fresh database, with an admin, an editor and a viewer token."""
    db = database.Database(settings.database)
    app = server_app.create_app(settings, db)
    with running.serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        found: dict[str, str] = {}
        with db.write() as conn:
            for role in tokens.ROLES:
                found[role] = tokens.create_api(conn, f"test-{role}", role, "test")[1]
        yield Api(client, db, found)
    db.dispose()


@contextmanager
def second_server(
    api: Api, settings: config.ServerSettings, timeout: float = 30
) -> Iterator[tuple[Api, runtime.Runtime]]:
    """Another server in this process over `api`'s database (a replica with its own runtime): a
    client on it with the same tokens, and its runtime."""
    db = database.Database(settings.database)
    app = server_app.create_app(settings, db)
    with running.serve(app) as url, httpx.Client(base_url=url, timeout=timeout) as client:
        yield Api(client, db, api.tokens), app.state.runtime
    db.dispose()


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body of a response that must have `status` (the body is shown otherwise)."""
    assert response.status_code == status, (response.status_code, response.text)
    return response.json() if response.content else None


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """A problem+json body with `status`."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"]
    return body
