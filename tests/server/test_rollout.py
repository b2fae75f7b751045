"""Rollout per scope: the readiness report (would-block flows in the window, coverage of observed
connections by the active policy, agents in sync), promotion refused when not ready (nothing
changes), forced promotion audited, stepping back always allowed, and the CLI."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from microseg.cli import main
from tests.server.conftest import Api, ok, problem
from tests.server.estates import provision_example
from tests.server.test_flow_summary import enroll, flow, send

APP, WEB, DB = "10.77.1.21", "10.77.1.11", "10.77.1.31"
SCOPE = "env=prod,role=db"


def sync(agent: Api) -> None:
    """The agent applies its current ruleset (a mode change gives it a new one)."""
    ok(agent.post("/agent/status", {"appliedHash": ok(agent.get("/agent/ruleset"))["hash"]}))


@pytest.fixture
def estate(api: Api) -> Api:
    """The example estate provisioned; prod-db-1's agent applied its ruleset and saw app -> db."""
    provision_example(api)
    db = enroll(api, "prod-db-1", DB, {})
    sync(db)
    at = time.time() - 600
    assert send(db, "b-1", flow(APP, DB, 3306, at, process="mysqld", connections=9))
    api.db_agent = db  # type: ignore[attr-defined]
    return api


def test_a_scope_whose_traffic_is_covered_is_ready(estate: Api) -> None:
    report = ok(estate.get("/rollout/readiness", scope=SCOPE))
    assert report["workloads"] == 1 and report["modes"]["enforce"] == 1
    assert report["connections"] == {"total": 9, "allowed": 9, "wouldBlockSeen": 0}
    assert all(c["ok"] for c in report["checks"].values())
    assert report["agents"]["in sync"] == 1


def test_would_block_and_uncovered_traffic_refuse_enforce_and_change_nothing(estate: Api) -> None:
    db: Api = estate.db_agent  # type: ignore[attr-defined]
    assert send(db, "b-2", flow(WEB, DB, 3306, time.time() - 300, verdict="would-block", connections=3))
    body = problem(estate.post("/rollout/promote", {"scope": SCOPE, "to": "enforce"}), 409)
    assert body["failed"] == ["wouldBlock", "coverage"]
    assert "3 would-block connection(s)" in body["detail"] and "75.0%" in body["detail"]
    [uncovered] = body["readiness"]["uncovered"]
    assert (
        uncovered["flow"].startswith("prod-web-1 (10.77.1.11) -> prod-db-1") and uncovered["connections"] == 3
    )
    assert uncovered["verdict"]["rule"] is None  # the default deny decides it
    assert ok(estate.get("/rollout"))["items"] == []
    # alert only needs the agents, and stepping back needs nothing
    made = ok(estate.post("/rollout/promote", {"scope": SCOPE, "to": "alert", "note": "watch first"}))
    assert (made["mode"], made["forced"], made["modeScope"]) == ("alert", False, "rollout-env-prod-role-db")
    assert ok(estate.get("/rollout"))["items"] == [
        {"scope": SCOPE, "modeScope": "rollout-env-prod-role-db", "mode": "alert"}
    ]
    assert ok(estate.get("/rollout/readiness", scope=SCOPE))["modes"]["alert"] == 1
    assert ok(estate.get("/rollout/readiness", scope=SCOPE))["notInSync"] == ["prod-db-1"]  # a new ruleset
    sync(db)
    # looser thresholds pass; force passes and is audited
    loose = {"scope": SCOPE, "to": "enforce", "minCoverage": 70, "maxWouldBlock": 5}
    assert ok(estate.post("/rollout/promote", loose))["forced"] is False
    ok(estate.post("/rollout/promote", {"scope": SCOPE, "to": "visibility"}))
    forced = ok(estate.post("/rollout/promote", {"scope": SCOPE, "to": "enforce", "force": True}))
    assert forced["forced"] is True
    actions = [e["action"] for e in ok(estate.get("/audit", target="ModeScope/"))["items"]]
    assert actions.count("override-readiness") == 1 and actions.count("rollout-promote") == 4


def test_agents_out_of_sync_block_alert_and_enforce(estate: Api) -> None:
    db: Api = estate.db_agent  # type: ignore[attr-defined]
    ok(db.post("/agent/status", {"appliedHash": "sha256:" + "0" * 64}))
    body = problem(estate.post("/rollout/promote", {"scope": SCOPE, "to": "alert"}), 409)
    assert body["failed"] == ["agentsInSync"] and body["readiness"]["notInSync"] == ["prod-db-1"]
    assert ok(estate.post("/rollout/promote", {"scope": SCOPE, "to": "visibility"}))["mode"] == "visibility"


def test_bad_requests_are_problems(estate: Api) -> None:
    problem(estate.get("/rollout/readiness", scope="env in (prod"), 422)
    problem(estate.post("/rollout/promote", {"scope": SCOPE, "to": "block"}), 422)
    problem(estate.as_("viewer").post("/rollout/promote", {"scope": SCOPE, "to": "alert"}), 403)


def test_the_cli_prints_readiness_and_refuses_with_exit_2(estate: Api) -> None:
    base = ["--server", str(estate.client.base_url), "--token", estate.tokens["editor"], "rollout"]
    shown = CliRunner().invoke(main.app, [*base, "readiness", "--scope", SCOPE])
    assert shown.exit_code == 0, shown.output
    assert "scope env=prod,role=db: 1 workload (1 enforce)" in shown.output and "coverage" in shown.output
    db: Api = estate.db_agent  # type: ignore[attr-defined]
    assert send(db, "b-2", flow(WEB, DB, 3306, time.time() - 300, verdict="would-block"))
    refused = CliRunner().invoke(main.app, [*base, "promote", "--scope", SCOPE, "--to", "enforce"])
    assert refused.exit_code == 2 and "not ready for enforce" in refused.output
