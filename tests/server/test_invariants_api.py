"""Invariants on the server: a draft that breaks one is refused (409, nothing provisioned), or
provisioned with `force` and an audit record; the draft diff lists violations; flows that break
an invariant become an event, once, and blocked ones do not. The check itself is tested in
tests/engine/test_invariants.py."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from microseg.cli import main
from tests.server.conftest import Api, ok, problem
from tests.server.estates import doc, provision_example, rule
from tests.server.test_flow_summary import enroll, flow, send

DEV_WEB, PROD_DB, PROD_WEB = "10.77.2.11", "10.77.1.31", "10.77.1.11"


@pytest.fixture
def estate(api: Api) -> Api:
    """The example estate (which declares dev-never-reaches-prod and only-bastion-ssh), provisioned."""
    provision_example(api)
    return api


def break_env_separation(api: Api) -> None:
    """A draft without the guard rail and with an allow from dev to prod."""
    ok(api.delete("/rules/security/dev-never-reaches-prod"), 204)
    ok(api.post("/rules", rule("application", "oops", 900, "env=dev,role=web", "role=db", ["mysql"])), 201)


def test_a_draft_that_breaks_an_invariant_is_refused_and_nothing_changes(estate: Api) -> None:
    break_env_separation(estate)
    body = problem(estate.post("/versions", {"note": "v2"}), 409)
    assert body["title"] == "Invariants broken"
    assert "dev-never-reaches-prod" in body["detail"] and "nothing was provisioned" in body["detail"]
    [v] = [v for v in body["violations"] if "prod-db-1" in v["destinations"]]
    assert v["sources"] == ["dev-web-1"] and v["port"] == "3306/tcp" and v["rule"] == "application/oops"
    assert [x["name"] for x in ok(estate.get("/versions"))["items"]] == ["v1"]
    diff = ok(estate.get("/draft/diff"))
    assert diff["invariants"]["declared"] == 2
    assert diff["invariants"]["total"] == len(body["violations"]) >= 1


def test_force_provisions_and_audits_what_it_breaks(estate: Api) -> None:
    break_env_separation(estate)
    made = ok(estate.post("/versions", {"note": "emergency", "force": True}), 201)
    assert made["name"] == "v2"
    log = ok(estate.get("/audit"))["items"]
    override = [e for e in log if e["action"] == "override-invariants"]
    assert len(override) == 1 and override[0]["details"]["total"] >= 1
    [prov] = [e for e in log if e["action"] == "provision" and e["target"] == "version/2"]
    assert prov["details"]["invariantsBroken"][0]["invariant"] == "dev-never-reaches-prod"


def test_a_viewer_cannot_force(estate: Api) -> None:
    break_env_separation(estate)
    problem(estate.as_("viewer").post("/versions", {"note": "x", "force": True}), 403)


def test_the_cli_prints_the_violations_and_force_gets_through(estate: Api) -> None:
    break_env_separation(estate)
    url = str(estate.client.base_url)
    env = {"MICROSEG_SERVER": url, "MICROSEG_TOKEN": estate.tokens["admin"]}
    refused = CliRunner().invoke(main.app, ["provision", "-m", "v2"], env=env)
    assert refused.exit_code == 2
    assert "invariant dev-never-reaches-prod: dev-web-1 -> " in refused.output
    forced = CliRunner().invoke(main.app, ["provision", "-m", "v2", "--force"], env=env)
    assert forced.exit_code == 0, forced.output
    assert "provisioned v2" in forced.output


def test_flows_that_break_an_invariant_raise_one_event(estate: Api) -> None:
    db = enroll(estate, "prod-db-1", PROD_DB, {})
    now = time.time() - 120
    assert send(db, "b-1", flow(DEV_WEB, PROD_DB, 3306, now, verdict="would-block"),
                flow(DEV_WEB, PROD_DB, 5432, now, verdict="blocked"),
                flow(PROD_WEB, PROD_DB, 22, now, process="sshd"))  # fmt: skip
    found = ok(estate.get("/events", kind="invariant-violation"))["items"]
    by_name = {e["details"]["invariant"]: e for e in found}
    assert set(by_name) == {"dev-never-reaches-prod", "only-bastion-ssh"}
    assert by_name["dev-never-reaches-prod"]["details"]["count"] == 1  # the blocked one proves it
    assert "10.77.2.11 -> 10.77.1.31 3306/tcp (would-block)" in by_name["dev-never-reaches-prod"]["message"]
    assert by_name["only-bastion-ssh"]["workload"] == "prod-db-1"
    # the same connections reported again within the hour: no new event
    assert send(db, "b-2", flow(DEV_WEB, PROD_DB, 3306, now + 60, verdict="would-block"))
    assert len(ok(estate.get("/events", kind="invariant-violation"))["items"]) == 2


def test_an_exception_steps_over_an_invariant_without_force_and_is_listed(estate: Api) -> None:
    soon = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    spec = {"owner": "dba", "reason": "data migration", "expires": soon, "from": [{"selector": "env=dev,role=web"}],
            "to": [{"selector": "env=prod,role=db"}], "services": ["mysql"]}  # fmt: skip
    ok(estate.post("/exceptions", doc("Exception", "migration", spec)), 201)
    assert ok(estate.get("/draft/diff"))["invariants"]["violations"] == []  # a request allows nothing yet
    ok(estate.as_("editor").post("/exceptions/migration/approve"))
    [v] = ok(estate.get("/draft/diff"))["invariants"]["violations"]
    assert (v["invariant"], v["rule"], v["excepted"]) == (
        "dev-never-reaches-prod",
        "exception/migration",
        True,
    )
    ok(estate.post("/versions", {"note": "migration window"}), 201)
    log = ok(estate.get("/audit"))["items"]
    assert not [e for e in log if e["action"] == "override-invariants"]
    [prov] = [e for e in log if e["action"] == "provision" and e["target"] == "version/2"]
    assert prov["details"]["invariantsBroken"][0]["excepted"] is True
