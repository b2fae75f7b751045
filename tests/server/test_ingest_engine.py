"""Which engine flow ingest judges invariants with (`ingest._engine`), on two replicas over one
database, SQLite and PostgreSQL: a replica that has nothing provisioned does not read the state
row for every batch, yet judges the flows it receives against a version another replica
provisioned as soon as its watcher has seen the change."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from microseg.server import config, runtime
from tests.server.conftest import Api, ok, second_server
from tests.server.estates import example
from tests.server.test_flow_summary import enroll, flow, send

DEV_WEB, PROD_DB = "10.77.2.11", "10.77.1.31"


@pytest.fixture
def replica(api: Api, settings: config.ServerSettings) -> Iterator[tuple[Api, runtime.Runtime]]:
    """A second server over the same database: a client on it, and its runtime."""
    with second_server(api, settings) as found:
        yield found


def test_a_replica_judges_against_a_version_another_provisioned(
    api: Api, replica: tuple[Api, runtime.Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    other, rt = replica
    ok(api.post("/apply", {"documents": example()}))  # a draft only: nothing provisioned yet
    agent = Api(other.client, other.db, {}, enroll(api, "prod-db-1", PROD_DB, {}).who)
    breaking = flow(DEV_WEB, PROD_DB, 3306, time.time() - 120)
    assert send(agent, "b-0", breaking)
    time.sleep(0.3)  # the replica's watcher (every 0.05 s here) has read the state row
    assert send(agent, "b-1", breaking)

    refreshed: list[bool] = []
    compiled = rt.compiled

    def counting(*, refresh: bool = True) -> Any:
        refreshed.append(refresh)
        return compiled(refresh=refresh)

    monkeypatch.setattr(rt, "compiled", counting)
    for i in range(5):
        assert send(agent, f"c-{i}", breaking)
    assert refreshed.count(True) == 0  # no version: the state row was not read for each batch
    assert not ok(other.get("/events", kind="invariant-violation"))["items"]

    ok(api.post("/versions", {"note": "v1"}), 201)  # on the first server
    deadline = time.monotonic() + 5
    found: list[dict[str, Any]] = []
    while not found and time.monotonic() < deadline:  # at most 25 batches, within the upload limit
        assert send(agent, f"d-{time.monotonic()}", breaking)
        found = ok(other.get("/events", kind="invariant-violation"))["items"]
        time.sleep(0.2)
    assert [e["details"]["invariant"] for e in found] == ["dev-never-reaches-prod"]
