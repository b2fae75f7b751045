"""`GET /flows/summary` and `microseg flows` over real agents' uploads: batches fold into hourly
summaries once, ends resolve to workloads at query time (labels change), filters and paging,
retention, bad input as problem+json and no access for agents."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from microseg.cli import flows as flows_cli
from microseg.cli import main, output
from microseg.server import config, routes_flows, runtime
from microseg.store import flows, summaries
from tests.server.conftest import Api, ok, problem
from tests.server.estates import doc, example

HOUR = 3600.0
NOW = summaries.bucket_of(time.time())
T1, T2 = NOW - 2 * HOUR, NOW - HOUR
"""Two earlier hour buckets."""
WEB, DB, OUTSIDE, PARTNER = "10.88.0.10", "10.88.0.20", "192.0.2.7", "198.51.100.9"


def enroll(api: Api, hostname: str, address: str, labels: dict[str, str]) -> Api:
    """An agent for `hostname`, with a token bound to that workload (adopted when declared)."""
    made = ok(
        api.post("/enrollment-tokens", {"name": hostname, "labels": labels, "workloads": [hostname]}), 201
    )
    body = {
        "token": made["token"],
        "inventory": {"hostname": hostname, "addresses": [address], "os": "linux"},
    }
    return api.as_(ok(api.as_("none").post("/agent/enroll", body), 201)["credential"])


def flow(src: str, dst: str, port: int, at: float, **more: Any) -> dict[str, Any]:
    return {"direction": "in", "src": src, "dst": dst, "dport": port, "proto": "tcp", "bytes": 100,
            "packets": 2, "connections": 1, "first_seen": at, "last_seen": at + 60, "verdict": "allowed",
            **more}  # fmt: skip


def send(agent: Api, batch: str, *records: dict[str, Any]) -> bool:
    stored: bool = ok(agent.post("/agent/flows", {"batch_id": batch, "records": list(records)}))["stored"]
    return stored


@pytest.fixture
def estate(api: Api) -> Api:
    """web-1 and db-1 with agents, an unmanaged partner network, and their reports over two hours."""
    web = enroll(api, "web-1", WEB, {"app": "crm", "role": "web", "env": "prod"})
    db = enroll(api, "db-1", DB, {"app": "crm", "role": "db", "env": "prod"})
    partner = doc(
        "Workload", "partner", {"kind": "unmanaged", "addresses": ["198.51.100.0/24"]}, {"zone": "x"}
    )
    ok(api.post("/workloads", partner), 201)
    to_db = flow(WEB, DB, 5432, T1, direction="out", process="/usr/bin/psql")
    assert send(web, "w-1", to_db, flow(OUTSIDE, WEB, 443, T1, process="/usr/sbin/nginx"),
                flow(PARTNER, WEB, 22, T1 + 10, verdict="blocked", rule="security/no-ssh"))  # fmt: skip
    assert not send(web, "w-1", to_db)  # a retry of w-1: stored once, summed once
    assert send(web, "w-2", {**to_db, "first_seen": T1 + 100, "last_seen": T1 + 900, "bytes": 50},
                flow(OUTSIDE, WEB, 443, T2, process="/usr/sbin/nginx"))  # fmt: skip
    assert send(db, "d-1", flow(WEB, DB, 5432, T1 + 5, process="postgres", connections=2))
    return api


def rows(api: Api, **filters: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ok(api.get("/flows/summary", **filters))["items"]
    return found


def keys(found: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return sorted((r["reporter"], r["src"], r["dport"]) for r in found)


def test_batches_fold_into_hourly_rows_with_both_reports_kept(estate: Api) -> None:
    found = rows(estate)
    assert len(found) == 5
    out = next(r for r in found if r["reporter"] == "web-1" and r["dport"] == 5432)
    assert (out["connections"], out["bytes"], out["packets"]) == (2, 150, 4)  # w-1 once, plus w-2
    assert (out["bucket"], out["firstSeen"], out["lastSeen"]) == (T1, T1, T1 + 900)
    assert (out["direction"], out["process"], out["srcWorkload"], out["dstWorkload"]) == (
        "out", "/usr/bin/psql", "web-1", "db-1")  # fmt: skip
    seen_by_db = next(r for r in found if r["reporter"] == "db-1")
    assert (seen_by_db["direction"], seen_by_db["connections"], seen_by_db["rule"]) == ("in", 2, None)
    assert sorted(r["bucket"] for r in found if r["dport"] == 443) == [T1, T2]
    outside = next(r for r in found if r["src"] == OUTSIDE)
    assert outside["srcWorkload"] is None and outside["dstWorkload"] == "web-1"
    assert next(r for r in found if r["src"] == PARTNER)["srcWorkload"] == "partner"  # by containment


def test_filters_by_port_process_verdict_ends_and_window(estate: Api) -> None:
    assert keys(rows(estate, port=5432)) == [("db-1", WEB, 5432), ("web-1", WEB, 5432)]
    assert keys(rows(estate, process="*nginx")) == [("web-1", OUTSIDE, 443)] * 2
    assert keys(rows(estate, process="post*", port=5432)) == [("db-1", WEB, 5432)]
    blocked = rows(estate, verdict="blocked")
    assert keys(blocked) == [("web-1", PARTNER, 22)] and blocked[0]["rule"] == "security/no-ssh"
    assert len(rows(estate, src="web-1")) == 2 and len(rows(estate, src=WEB)) == 2
    assert keys(rows(estate, src=OUTSIDE)) == [("web-1", OUTSIDE, 443)] * 2
    assert keys(rows(estate, dst="db-1")) == [("db-1", WEB, 5432), ("web-1", WEB, 5432)]
    assert len(rows(estate, proto="udp")) == 0
    just_before_t2 = f"{int(time.time() - T2) + 30}s"
    assert [r["bucket"] for r in rows(estate, since=just_before_t2)] == [T2]
    assert [r["bucket"] for r in rows(estate, since=str(T2))] == [T2]
    assert len(rows(estate, since="1d", until=T2)) == 4 and len(rows(estate, since="30m")) == 0


def test_the_selector_matches_either_end_on_labels_as_they_are_now(estate: Api) -> None:
    assert keys(rows(estate, selector="role=db")) == [("db-1", WEB, 5432), ("web-1", WEB, 5432)]
    assert len(rows(estate, selector="zone=x")) == 1 and len(rows(estate, selector="env=prod")) == 5
    assert rows(estate, selector="role=cache") == []
    ok(estate.post("/labels/bulk", {"workloads": ["db-1"], "add": {"role": "cache"}}))
    assert len(rows(estate, selector="role=cache")) == 2 and rows(estate, selector="role=db") == []
    ok(estate.post("/apply", {"documents": example()}))
    ok(estate.post("/versions", {"note": "v1"}), 201)  # from now on the active engine resolves
    assert len(rows(estate, selector="role=cache")) == 2 and len(rows(estate, selector="zone=x")) == 1
    assert rows(estate, selector="role=cache,env=dev") == []


def test_pages_follow_continue_to_the_end(estate: Api) -> None:
    seen: list[dict[str, Any]] = []
    token: int | None = 0
    while token is not None:
        page = ok(estate.get("/flows/summary", limit=2, continue_=token))
        assert len(page["items"]) <= 2
        seen += page["items"]
        token = page["continue"]
    assert seen == rows(estate)


@pytest.mark.parametrize(
    "params",
    [{"selector": "env in (prod"}, {"since": "yesterday"}, {"since": "-5"}, {"port": 70000},
     {"verdict": "maybe"}, {"proto": "tls"}, {"limit": 0}, {"until": "soon"}, {"continue": -1}],
    ids=["selector", "since-word", "since-negative", "port", "verdict", "proto", "limit", "until",
         "continue"],
)  # fmt: skip
def test_bad_filters_are_422_problems(api: Api, params: dict[str, Any]) -> None:
    problem(api.get("/flows/summary", **params), 422)


def test_viewers_may_read_and_agents_may_not(api: Api) -> None:
    agent = enroll(api, "web-1", WEB, {})
    assert ok(api.as_("viewer").get("/flows/summary")) == {"items": [], "continue": None}
    problem(agent.get("/flows/summary"), 403)
    problem(api.as_("none").get("/flows/summary"), 401)


def test_retention_drops_summaries_and_raw_batches_past_the_setting(
    estate: Api, settings: config.ServerSettings
) -> None:
    rt = runtime.Runtime(settings, estate.db)
    assert routes_flows.retention_days(rt) == 30
    assert routes_flows.expire(rt, now=T1 + 29 * routes_flows.DAY) == (0, 0)
    assert routes_flows.expire(rt, now=T2 + 30 * routes_flows.DAY) == (4, 2)  # T1 rows; batches w-1, d-1
    assert [r["bucket"] for r in rows(estate)] == [T2]
    with estate.db.read() as conn:
        assert flows.counts(conn) == (1, 2)


def test_the_cli_lists_summaries_as_a_table_and_as_json(estate: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.console, "width", 250)  # the table's cells whole, not elided
    app = typer.Typer()
    app.callback()(main.main)
    app.command()(output.reporting(flows_cli.flows))
    base = ["--server", str(estate.client.base_url), "--token", estate.tokens["viewer"], "flows"]
    result = CliRunner().invoke(app, [*base, "--since", "1d", "-l", "role=db", "-o", "json", "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert [r["dport"] for r in json.loads(result.output)] == [5432]
    result = CliRunner().invoke(app, [*base, "--since", "1d", "--process", "*nginx"])
    assert result.exit_code == 0 and "web-1 (10.88.0.10)" in result.output and OUTSIDE in result.output
    assert "5432" not in result.output
    result = CliRunner().invoke(app, [*base, "--since", "whenever"])
    assert result.exit_code == 2 and "since" in result.output
