"""The agent's flow upload against a real server (SQLite, no namespaces needed): a batch the server
throttles (429 with Retry-After) stays spooled, the uploader waits what the server asked, and the
batch is delivered after that; nothing is lost or sent twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from microseg.agent import client as api
from microseg.agent import spool, uploader
from microseg.server import app as server_app
from microseg.server import ratelimit
from microseg.store import database, tokens
from tests.server import running
from tests.server.conftest import make_settings

ADDRESS = "10.77.9.9"
WINDOW = 2.0
"""Seconds of the test server's upload window (one batch per window)."""


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[api.Client, httpx.Client]]:
    """An enrolled agent's client, and an admin's HTTP client, of a server that takes one flow
    batch per agent every WINDOW seconds."""
    settings = make_settings(database.sqlite_url(tmp_path / "data"))
    db = database.Database(settings.database)
    app = server_app.create_app(settings, db)
    app.state.runtime.flow_limit = ratelimit.RateLimit(1, WINDOW)
    with db.write() as conn:
        admin = tokens.create_api(conn, "test-admin", "admin", "test")[1]
    with (
        running.serve(app) as url,
        httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {admin}"}) as http,
    ):
        made = http.post("/enrollment-tokens", json={"name": "up"})
        assert made.status_code == 201, made.text
        found = api.Client(url)
        found.enroll(made.json()["token"], {"hostname": "up-1", "addresses": [ADDRESS]})
        yield found, http
        found.close()
    db.dispose()


def _record(port: int) -> dict[str, Any]:
    now = time.time()
    return {"direction": "in", "src": "10.77.1.21", "dst": ADDRESS, "dport": port, "proto": "tcp",
            "first_seen": now - 60, "last_seen": now, "verdict": "allowed"}  # fmt: skip


def test_a_throttled_batch_stays_spooled_until_the_retry_after_has_passed(
    agent: tuple[api.Client, httpx.Client], tmp_path: Path
) -> None:
    client, http = agent
    batches = spool.Spool(tmp_path / "spool")
    batches.put([_record(443)])
    second = batches.put([_record(8443)])
    sender = uploader.Uploader(batches, client)
    assert sender.step() == 0.0  # the first batch is delivered
    wait = sender.step()
    assert 0 < wait <= WINDOW  # the server's Retry-After, not the unreachable backoff
    oldest = batches.oldest()
    assert oldest is not None and second in oldest[0].name  # kept, and still the next one
    time.sleep(wait)
    assert sender.step() == 0.0
    assert batches.oldest() is None
    stored = http.get("/flows", params={"workload": "up-1"}).json()["items"]
    assert sorted(r["dport"] for r in stored) == [443, 8443]


def test_retry_after_is_read_as_seconds_or_a_date_and_bounded() -> None:
    def asked(value: str) -> float:
        response = httpx.Response(
            429, headers={"Retry-After": value}, request=httpx.Request("POST", "http://x")
        )
        with pytest.raises(api.Throttled) as raised:
            api.raise_for(response, "http://x", "/api/v1/agent/flows")
        return raised.value.retry_after

    assert asked("7") == 7.0
    assert 0 <= asked(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))) <= 31
    assert asked("not a time") == 1.0 and asked("1e12") == api.RETRY_AFTER_MAX
