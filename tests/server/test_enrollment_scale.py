"""Enrollment at scale (issue 17): concurrent enrollers all succeed, and one enrollment's work
does not grow with the estate.

Concurrency runs over real HTTP against the app on both backends (8 enrollers at once, each with
its own connection). Cost is counted where it happens: the SQL statements one enrollment runs
(and, on SQLite, the virtual-machine steps they take, which grow with every row a statement
scans) at 10 and at 500 stored workloads. No timings: the rate lives in bench/.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from microseg.server import config, enrollment, kinds, models, runtime
from microseg.store import database, migrate, objects, tokens
from tests.server.conftest import Api, make_settings, ok

ENROLLERS = 8
STEP = 10
"""SQLite: count one step per this many virtual-machine instructions."""


@pytest.fixture
def settings(database_url: str) -> config.ServerSettings:
    return make_settings(database_url, enroll_per_minute=10_000)


def enrollment_token(api: Api) -> str:
    body = {"name": "fleet", "labels": {"env": "prod", "app": "web"}, "reusable": True}
    secret: str = ok(api.post("/enrollment-tokens", body), 201)["token"]
    return secret


def enroll_at_once(api: Api, requests: list[dict[str, Any]]) -> list[httpx.Response]:
    """Every request sent at the same moment, each on a connection of its own."""
    start = threading.Barrier(len(requests))

    def one(body: dict[str, Any]) -> httpx.Response:
        with httpx.Client(base_url=str(api.client.base_url), timeout=60) as client:
            start.wait()
            return client.post("/api/v1/agent/enroll", json=body)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def request(secret: str, hostname: str, address: str) -> dict[str, Any]:
    return {"token": secret, "inventory": {"hostname": hostname, "addresses": [address], "os": "linux"}}


def test_eight_concurrent_enrollers_all_get_their_own_workload(api: Api) -> None:
    secret = enrollment_token(api)
    answers = enroll_at_once(api, [request(secret, f"web-{i}", f"10.77.8.{i + 1}") for i in range(ENROLLERS)])
    assert [a.status_code for a in answers] == [201] * ENROLLERS, [a.text for a in answers]
    bodies = [a.json() for a in answers]
    assert sorted(b["workload"] for b in bodies) == [f"web-{i}" for i in range(ENROLLERS)]
    assert len({b["agentId"] for b in bodies}) == ENROLLERS
    for i in range(ENROLLERS):
        stored = ok(api.get(f"/workloads/web-{i}"))
        assert stored["metadata"]["labels"] == {"env": "prod", "app": "web"}
        assert stored["spec"]["addresses"] == [f"10.77.8.{i + 1}"]


def test_concurrent_enrollers_racing_for_one_address_leave_it_with_one_workload(api: Api) -> None:
    secret = enrollment_token(api)
    answers = enroll_at_once(api, [request(secret, f"db-{i}", "10.77.9.1") for i in range(ENROLLERS)])
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] + [422] * (ENROLLERS - 1), [a.text for a in answers]
    winner = next(a.json()["workload"] for a in answers if a.status_code == 201)
    holders = [w["metadata"]["name"] for w in ok(api.get("/workloads"))["items"]
               if "10.77.9.1" in w["spec"]["addresses"]]  # fmt: skip
    assert holders == [winner]


def test_concurrent_enrollers_spelling_one_hostname_in_other_cases_make_one_workload(api: Api) -> None:
    secret = enrollment_token(api)
    names = ["app-1", "APP-1", "App-1", "app-1.", "aPp-1", "APP-1.", "ApP-1", "app-1"]
    answers = enroll_at_once(api, [request(secret, n, f"10.77.10.{i + 1}") for i, n in enumerate(names)])
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] + [409] * (len(names) - 1), [a.text for a in answers]
    listed = [w["metadata"]["name"] for w in ok(api.get("/workloads"))["items"]]
    assert len([n for n in listed if n.casefold() == "app-1"]) == 1


# --- cost per enrollment ---------------------------------------------------------------------------


@dataclass
class Work:
    """What one enrollment did to the database."""

    statements: list[str]
    steps: int
    """SQLite virtual-machine instructions, in `STEP`s (0 on PostgreSQL)."""


@contextmanager
def counting(db: database.Database) -> Iterator[Work]:
    """Count the statements run on `db` (and SQLite's VM steps) inside the block."""
    work = Work([], 0)

    def statement(_conn: Any, _cursor: Any, text: str, *_args: Any) -> None:
        work.statements.append(text)

    def step() -> int:
        work.steps += 1
        return 0

    def connected(dbapi: Any, _record: Any) -> None:
        if isinstance(dbapi, sqlite3.Connection):
            dbapi.set_progress_handler(step, STEP)

    db.dispose()  # new connections, so each gets the progress handler
    sa.event.listen(db.engine, "connect", connected)
    sa.event.listen(db.engine, "before_cursor_execute", statement)
    try:
        yield work
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", statement)
        sa.event.remove(db.engine, "connect", connected)
        db.dispose()


def stored_workloads(db: database.Database, count: int) -> None:
    """`count` workloads of hosts already in the inventory, one address each."""
    with db.write() as conn:
        for i in range(count):
            doc = {"apiVersion": kinds.API_VERSION, "kind": "Workload", "metadata": {"name": f"old-{i}"},
                   "spec": {"kind": "vm", "addresses": [f"10.1.{i // 250}.{i % 250 + 1}"]}}  # fmt: skip
            objects.put(conn, "Workload", f"old-{i}", doc, "test")


def one_enrollment(database_url: str, existing: int) -> Work:
    """The work of enrolling one new host next to `existing` workloads (on a fresh database)."""
    db = database.Database(database_url)
    try:
        migrate.upgrade(db)
        stored_workloads(db, existing)
        with db.write() as conn:
            secret = tokens.create_enrollment(conn, "t", {"env": "prod"}, mode="visibility", reusable=True,
                                              expires_at=None, actor="test")[1]  # fmt: skip
        rt = runtime.Runtime(make_settings(database_url), db)
        body = models.EnrollRequest(token=secret, inventory=models.Inventory(
            hostname="NEW-host", addresses=["10.2.0.1", "10.2.0.2"]))  # fmt: skip
        with counting(db) as work:
            done = enrollment.enroll(rt, body)
        assert done.workload == "NEW-host"
        return work
    finally:
        db.dispose()


@pytest.fixture
def second_url(database_url: str, tmp_path: Any) -> Iterator[str]:
    """A second fresh database of the same backend."""
    if database_url.startswith("sqlite"):
        yield database.sqlite_url(tmp_path / "second")
        return
    from tests import postgres

    with postgres.schema() as url:
        yield url


def test_one_enrollment_does_the_same_work_at_10_and_at_500_workloads(
    database_url: str, second_url: str
) -> None:
    small = one_enrollment(database_url, 10)
    large = one_enrollment(second_url, 500)
    assert large.statements == small.statements
    # a read of every workload costs thousands of steps per 500 rows; an index's extra level a few
    assert large.steps <= small.steps * 1.2 + 5, (small.steps, large.steps)


def test_a_hostname_in_another_case_is_found_among_many_workloads(api: Api) -> None:
    stored_workloads(api.db, 300)
    secret = enrollment_token(api)
    answer = api.as_("none").post("/agent/enroll", request(secret, "OLD-299.", "10.77.11.1"))
    assert answer.status_code == 409, answer.text
    assert "old-299 already exists" in answer.json()["detail"]
    taken = api.as_("none").post("/agent/enroll", request(secret, "fresh", "10.1.1.50"))
    assert taken.status_code == 422 and "held by workload old-299" in taken.json()["detail"], taken.text


def test_upgrading_indexes_the_workloads_stored_before(database_url: str) -> None:
    db = database.Database(database_url)
    try:
        migrate.upgrade(db, "0007")
        doc = {"apiVersion": kinds.API_VERSION, "kind": "Workload", "metadata": {"name": "Legacy-Db"},
               "spec": {"kind": "unmanaged", "addresses": ["10.3.0.0/24"]}}  # fmt: skip
        with db.write() as conn:
            conn.execute(sa.insert(objects.T).values(kind="Workload", name="Legacy-Db", doc=doc, etag="e",
                                                     updated_at=0.0, updated_by="old"))  # fmt: skip
        migrate.upgrade(db)
        with db.read() as conn:
            assert objects.named_in_any_case(conn, "Workload", "legacy-db") == "Legacy-Db"
            assert objects.address_holder(conn, ipaddress.ip_network("10.3.0.7/32"), "new") == "Legacy-Db"
            assert objects.address_holder(conn, ipaddress.ip_network("10.3.1.7/32"), "new") is None
            assert objects.address_holder(conn, ipaddress.ip_network("10.3.0.7/32"), "Legacy-Db") is None
    finally:
        db.dispose()


def test_an_address_freed_by_deleting_its_workload_can_be_claimed_again(api: Api) -> None:
    secret = enrollment_token(api)
    ok(api.as_("none").post("/agent/enroll", request(secret, "first", "10.77.12.1")), 201)
    refused = api.as_("none").post("/agent/enroll", request(secret, "second", "10.77.12.1"))
    assert refused.status_code == 422, refused.text
    ok(api.delete("/workloads/first"), 204)
    ok(api.as_("none").post("/agent/enroll", request(secret, "second", "10.77.12.1")), 201)
    ok(api.as_("none").post("/agent/enroll", request(secret, "FIRST", "10.77.12.2")), 201)
