"""Issue 15 §2, what an agent credential may write into flow data, against the real server on both
backends: ends that are not IP addresses and times out of bounds refuse the batch (422 naming the
record and field); poison an older server stored is skipped and counted by every analysis, expired
when dated in the future, and purged by an admin; records about other workloads are dropped,
counted and reported once; a batch makes a bounded number of events; uploads are rate limited
with Retry-After; events expire; a full store answers 503 with Retry-After, never 500."""

from __future__ import annotations

import ipaddress
import json
import random
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from microseg.cli import main
from microseg.server import config, ingest, models, problems, routes_flows, runtime
from microseg.store import events, flows, summaries
from tests.server.conftest import Api, make_settings, ok, problem
from tests.server.estates import provision_example

NOW = time.time()
AT = NOW - 600
APP, WEB, CACHE = "10.77.1.21", "10.77.1.11", "10.77.1.41"
"""prod-app-1, prod-web-1 and prod-cache-1 of the example estate."""
EDGE, ROGUE = "10.77.8.1", "10.77.8.66"
"""Fresh hosts that enroll: an honest prod edge proxy and the attacker's host."""
UPLOADS_PER_MINUTE = 6
REPORTS_PER_MINUTE = 8


@pytest.fixture
def settings(database_url: str) -> config.ServerSettings:
    return make_settings(
        database_url, flow_uploads_per_minute=UPLOADS_PER_MINUTE, agent_reports_per_minute=REPORTS_PER_MINUTE
    )


def enroll(api: Api, hostname: str, address: str, labels: dict[str, str]) -> Api:
    made = ok(api.post("/enrollment-tokens", {"name": hostname, "labels": labels}), 201)
    body = {"token": made["token"], "inventory": {"hostname": hostname, "addresses": [address]}}
    return api.as_(ok(api.as_("none").post("/agent/enroll", body), 201)["credential"])


def record(src: str, dst: str, port: int, direction: str, **more: Any) -> dict[str, Any]:
    return {"direction": direction, "src": src, "dst": dst, "dport": port, "proto": "tcp", "connections": 1,
            "first_seen": AT, "last_seen": AT + 60, "verdict": "allowed", **more}  # fmt: skip


def upload(agent: Api, batch: str, *records: dict[str, Any]) -> httpx.Response:
    return agent.post("/agent/flows", {"batch_id": batch, "records": list(records)})


@pytest.fixture
def estate(api: Api) -> Iterator[tuple[Api, Api, Api]]:
    """The example estate provisioned; an honest edge proxy (env=prod) reported app -> edge:443;
    a rogue agent is enrolled. (api, edge agent, rogue agent)."""
    provision_example(api)
    edge = enroll(api, "edge-1", EDGE, {"env": "prod", "role": "edge"})
    rogue = enroll(api, "rogue-1", ROGUE, {"env": "dev"})
    ok(upload(edge, "e-1", record(APP, EDGE, 443, "in")))
    yield api, edge, rogue


def stored_rows(api: Api) -> int:
    with api.db.read() as conn:
        return summaries.counts(conn)


# -- poisoned analytics -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("src", "prod-web-1"), ("dst", "10.77.1.0/24"), ("src", "10.77.1.300"), ("dst", "")],
    ids=["name", "cidr", "not-an-address", "empty"],
)
def test_a_record_whose_end_is_not_an_ip_address_refuses_the_batch_naming_it(
    estate: tuple[Api, Api, Api], field: str, value: str
) -> None:
    api, edge, _ = estate
    before = stored_rows(api)
    bad = record(APP, EDGE, 443, "in") | {field: value}
    body = problem(upload(edge, "e-2", record(APP, EDGE, 443, "in"), bad), 422)
    assert [e["field"] for e in body["errors"]] == [f"records.1.{field}"]
    assert "must be one IP address" in body["errors"][0]["message"]
    assert stored_rows(api) == before  # nothing of the batch was stored


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"first_seen": NOW, "last_seen": 2**40 - 1}, "last_seen"),  # never expires
        ({"first_seen": NOW, "last_seen": NOW + 3600}, "last_seen"),  # past the clock skew
        ({"first_seen": AT + 100, "last_seen": AT}, "first_seen"),  # out of order
        ({"first_seen": NOW - 40 * 86_400, "last_seen": NOW}, "first_seen"),  # older than the retention
    ],
    ids=["near-2**40", "an-hour-ahead", "first-after-last", "older-than-retention"],
)
def test_times_out_of_bounds_refuse_the_batch_naming_the_record(
    estate: tuple[Api, Api, Api], change: dict[str, float], field: str
) -> None:
    api, edge, _ = estate
    before = stored_rows(api)
    body = problem(
        upload(edge, "e-3", record(APP, EDGE, 443, "in"), record(APP, EDGE, 80, "in") | change), 422
    )
    assert (body["field"], body["record"]) == (f"records.1.{field}", 1)
    assert stored_rows(api) == before
    ok(upload(edge, "e-3", record(APP, EDGE, 443, "in")))  # the clock skew allows a little
    ok(upload(edge, "e-4", record(APP, EDGE, 443, "in", first_seen=NOW, last_seen=time.time() + 200)))


ADDRESSES = ["1.2.3.4", "0.0.0.0", "255.255.255.255", "::", "::1", "1::", "2001:DB8::1", "1:2:3:4:5:6:7:8",
             "1:2:3:4:5:6:7::", "::ffff:10.0.0.1", "64:ff9b::1.2.3.4", "1:2:3:4:5:6:1.2.3.4", "1::2:3:4:5:6:7",
             "256.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.5", "1::2::3", ":1::", "1:2:3:4:5:6:7:8:9", "00000::1",
             "1:2:3:4:5:6:7:1.2.3.4", " 1.2.3.4", "10.0.0.0/8", "fe80::1%eth0", "db-1", ""]  # fmt: skip


def test_the_address_pattern_reads_what_ipaddress_reads_less_scope_ids() -> None:
    pattern = re.compile(models.IP_ADDRESS)
    for text in ADDRESSES:
        try:
            expected = "%" not in ipaddress.ip_address(text).compressed + text
        except ValueError:
            expected = False
        assert bool(pattern.match(text)) is expected, text
    for n in range(2000):  # every compression of random IPv6 addresses
        address = ipaddress.IPv6Address(random.Random(n).getrandbits(128) >> (n % 128))
        assert pattern.match(str(address)) and pattern.match(address.exploded), address


POISON = record("prod-web-1", EDGE, 443, "in", first_seen=NOW, last_seen=2**40 - 1)
"""What a server before the checks stored for one agent: a name for an end, dated near 2**40."""


def _store_poison(api: Api, reporter: str) -> None:
    with api.db.write() as conn:
        assert flows.store_batch(api.db, conn, flows.Batch.of("old", "poison", reporter, [POISON]))
        summaries.add_batch(api.db, conn, reporter, [POISON])


def _analyses(api: Api) -> dict[str, Any]:
    return {
        "map": ok(api.get("/flows/map", groupBy="role")),
        "simulate": ok(api.get("/flows/simulate")),
        "recommend": ok(api.get("/flows/recommend", groupBy="env,role")),
        "rule-hits": ok(api.get("/flows/rule-hits")),
        "readiness": ok(api.get("/rollout/readiness", scope="env=prod")),
    }


def test_poison_stored_before_the_checks_is_skipped_and_counted_by_every_analysis(
    estate: tuple[Api, Api, Api],
) -> None:
    api, _, _ = estate
    _store_poison(api, "edge-1")
    found = _analyses(api)
    assert {name: body["skippedRows"] for name, body in found.items()} == dict.fromkeys(found, 1)
    assert found["readiness"]["connections"]["total"] == 1  # the honest flow still counts
    assert ok(api.post("/rollout/promote", {"scope": "env=prod", "to": "visibility"}))["forced"] is False
    edges = found["map"]["edges"]
    assert [(e["source"], e["destination"]) for e in edges] == [("group:role=app", "group:role=edge")]


def test_poison_dated_in_the_future_expires_and_an_admin_purges_a_reporter(
    estate: tuple[Api, Api, Api], settings: config.ServerSettings
) -> None:
    api, _, _ = estate
    _store_poison(api, "rogue-1")
    assert routes_flows.expire(runtime.Runtime(settings, api.db)) == (1, 1)  # only the future row
    assert ok(api.get("/flows/simulate"))["skippedRows"] == 0
    _store_poison(api, "rogue-1")
    problem(api.as_("editor").delete("/flows", reporter="rogue-1"), 403)
    problem(api.delete("/flows"), 422)  # a purge of everything is refused
    assert ok(api.delete("/flows", reporter="rogue-1", since="1h"))["dropped"] == {
        "summaries": 1, "batches": 1, "counterHours": 0
    }  # fmt: skip
    assert ok(api.get("/flows/map"))["skippedRows"] == 0
    assert ok(api.get("/flows/summary", since="1d"))["items"][0]["reporter"] == "edge-1"  # the rest stays
    [purged] = ok(api.get("/audit", target="Flows/"))["items"]
    assert (purged["action"], purged["details"]["reporter"]) == ("flows-purge", "rogue-1")
    assert purged["actor"].startswith("token:test-admin")


# -- forged flows -----------------------------------------------------------------------------------


def test_records_about_other_workloads_are_dropped_counted_and_reported_once(
    estate: tuple[Api, Api, Api],
) -> None:
    api, _, rogue = estate
    forged = [record(WEB, CACHE, 6379, "out", connections=50), record(WEB, CACHE, 6379, "in")]
    own = record(ROGUE, APP, 8443, "out")
    answer = ok(upload(rogue, "r-1", *forged, own, record(APP, CACHE, 6379, "in")))
    assert (answer["stored"], answer["records"], answer["forged"]) == (True, 1, 3)
    rows = ok(api.get("/flows/summary", since="1d"))["items"]
    assert [(r["src"], r["dst"]) for r in rows if r["reporter"] == "rogue-1"] == [(ROGUE, APP)]
    assert "prod-cache-1" not in json.dumps(ok(api.get("/flows/map")))
    proposal = ok(api.get("/flows/recommend", groupBy="env,role"))
    assert "cache" not in str(proposal["documents"])  # no prod allow rule made of another's flows
    [event] = ok(api.get("/events", kind="flow-forged"))["items"]
    assert event["workload"] == "rogue-1" and event["details"]["count"] == 3
    assert event["details"]["agent"] and len(event["details"]["examples"]) == 3
    assert "rogue-1" in event["message"]
    ok(upload(rogue, "r-1", *forged, own))  # a retry of the batch: no second event
    assert len(ok(api.get("/events", kind="flow-forged"))["items"]) == 1


# -- disk fill --------------------------------------------------------------------------------------


def test_a_5000_record_blocked_batch_makes_a_bounded_number_of_events(estate: tuple[Api, Api, Api]) -> None:
    api, _, rogue = estate
    blocked = [record(APP, ROGUE, 1024 + i % 1000, "in", verdict="blocked", rule=f"made-up/rule-{i}")
               for i in range(5000)]  # fmt: skip
    assert ok(upload(rogue, "r-2", *blocked))["records"] == 5000
    with api.db.read() as conn:
        told = [e for e in events.query(conn, limit=100_000) if e["workload"] == "rogue-1"]
    assert len(told) <= ingest.MAX_RULE_EVENTS + 2
    assert sum(e["details"]["count"] for e in told if e["kind"] == "blocked") == 5000


def test_uploads_past_the_per_agent_limit_get_429_with_retry_after(estate: tuple[Api, Api, Api]) -> None:
    _, edge, rogue = estate
    for n in range(UPLOADS_PER_MINUTE):
        ok(upload(rogue, f"r-{n}", record(ROGUE, APP, 443, "out")))
    refused = upload(rogue, "r-late", record(ROGUE, APP, 443, "out"))
    problem(refused, 429)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    ok(upload(edge, "e-9", record(APP, EDGE, 443, "in")))  # per agent: the others are not slowed


def test_tamper_reports_past_the_per_agent_limit_get_429_and_add_no_events(
    estate: tuple[Api, Api, Api],
) -> None:
    api, edge, rogue = estate
    incidents = [{"at": NOW, "summary": f"rule {n} was deleted", "restoredIn": 0.1} for n in range(100)]
    for _ in range(REPORTS_PER_MINUTE):
        ok(rogue.post("/agent/status", {"tampered": True, "tamper": incidents}))
    refused = rogue.post("/agent/status", {"tampered": True, "tamper": incidents})
    problem(refused, 429)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    heartbeat = {"hostname": "rogue-1", "addresses": [ROGUE]}
    for _ in range(REPORTS_PER_MINUTE):  # heartbeats are counted apart from status reports
        ok(rogue.post("/agent/heartbeat", heartbeat))
    problem(rogue.post("/agent/heartbeat", heartbeat), 429)
    tampers = ok(api.get("/events", kind="tamper", workload="rogue-1", limit=10_000))["items"]
    assert len(tampers) == REPORTS_PER_MINUTE * len(incidents)
    ok(edge.post("/agent/status", {"tampered": False}))  # per agent: the others are not slowed


def test_events_older_than_the_retention_expire(
    estate: tuple[Api, Api, Api], settings: config.ServerSettings
) -> None:
    api, _, _ = estate
    old = time.time() - (settings.event_retention_days + 1) * 86_400
    with api.db.write() as conn:
        conn.execute(sa.insert(events.T), [{"at": old, "kind": "blocked", "workload": "x", "message": "old",
                                            "details": {}}])  # fmt: skip
        events.add(conn, "blocked", "x", "new")
    routes_flows.expire(runtime.Runtime(settings, api.db))
    assert [e["message"] for e in ok(api.get("/events", workload="x"))["items"]] == ["new"]


# SQLite only: filling a PostgreSQL disk needs a dedicated tablespace; its errors' mapping is
# tested below.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_full_store_answers_503_with_retry_after_and_stores_once_there_is_room(
    estate: tuple[Api, Api, Api],
) -> None:
    api, edge, _ = estate
    with api.db.read() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()

    def no_room(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    sa.event.listen(api.db.engine, "connect", no_room)
    api.db.engine.dispose()  # new connections, each limited to the database's size now
    big = [record(APP, EDGE, 1 + i, "in", process="x" * 200) for i in range(2000)]
    try:
        full = upload(edge, "e-full", *big)
        problem(full, 503)
        assert full.headers["Retry-After"] == str(problems.STORAGE_RETRY_AFTER)
    finally:
        sa.event.remove(api.db.engine, "connect", no_room)
        api.db.engine.dispose()
    assert ok(upload(edge, "e-full", *big))["records"] == 2000  # nothing half-stored before


@pytest.mark.parametrize(
    "orig",
    [psycopg.errors.DiskFull("could not extend file"), psycopg.errors.TooManyConnections("too many")],
    ids=["pg-disk-full", "pg-too-many-connections"],
)
def test_postgresql_resource_errors_map_to_503(orig: Exception) -> None:
    found = problems.from_database(sa.exc.OperationalError("INSERT", {}, orig))
    assert (found.status, found.headers) == (503, {"Retry-After": str(problems.STORAGE_RETRY_AFTER)})


def test_other_database_errors_stay_500() -> None:
    orig = psycopg.errors.UndefinedTable("no such table")
    assert problems.from_database(sa.exc.ProgrammingError("SELECT", {}, orig)).status == 500


def test_the_cli_purges_a_reporter_and_still_lists_flows(estate: tuple[Api, Api, Api]) -> None:
    api, _, _ = estate
    _store_poison(api, "rogue-1")
    base = ["--server", str(api.client.base_url), "--token", api.tokens["admin"], "flows"]
    listed = CliRunner().invoke(main.app, [*base, "--since", "1d", "-o", "json"])
    assert listed.exit_code == 0, listed.output
    assert {r["reporter"] for r in json.loads(listed.output)} == {"edge-1", "rogue-1"}
    purged = CliRunner().invoke(main.app, [*base, "purge", "--reporter", "rogue-1"])
    assert purged.exit_code == 0, purged.output
    assert "dropped 1 summary row, 1 batch, 0 counter hours" in purged.output
    listed = CliRunner().invoke(main.app, [*base, "--since", "1d", "-o", "json"])
    assert {r["reporter"] for r in json.loads(listed.output)} == {"edge-1"}
    refused = CliRunner().invoke(main.app, [*base, "purge"])
    assert refused.exit_code == 2 and "a purge of everything is refused" in refused.output
