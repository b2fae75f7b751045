"""Roles and lifecycles at the trust boundary (issue 15): deleting a workload revokes its agent, so
it needs an admin and is audited as a revocation; a ruleset long-poll held open when its agent is
revoked answers 401, not the next ruleset; four-eyes compares token owners, so an admin's second
token (or one that admin made for someone else) cannot approve that admin's exception."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from microseg.cli import main
from microseg.store import database, schema, tokens
from tests.server.conftest import Api, ok, problem
from tests.server.estates import doc, provision_example, workload

WEB = {"env": "prod", "app": "crm", "role": "web"}
SOON = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
EXCEPTION = {"owner": "dba", "reason": "data migration", "ticket": "CHG-7", "expires": SOON,
             "from": [{"selector": "env=dev,role=web"}], "to": [{"selector": "env=prod,role=db"}],
             "services": ["mysql"]}  # fmt: skip


def enroll(api: Api, hostname: str, address: str) -> tuple[Api, str]:
    """An enrolled agent (as a client) and its id."""
    made = ok(api.post("/enrollment-tokens", {"name": hostname, "labels": WEB}), 201)
    body = {
        "token": made["token"],
        "inventory": {"hostname": hostname, "addresses": [address], "os": "linux"},
    }
    enrolled = ok(api.as_("none").post("/agent/enroll", body), 201)
    [agent] = [a for a in ok(api.get("/agents"))["items"] if a["workload"] == hostname]
    return api.as_(enrolled["credential"]), str(agent["id"])


def actions(api: Api, target: str) -> list[str]:
    return [e["action"] for e in ok(api.get("/audit", target=target))["items"]]


# --- deleting a workload with a live agent ---------------------------------------------------------


def test_an_editor_cannot_revoke_an_agent_by_deleting_its_workload(api: Api) -> None:
    agent, _ = enroll(api, "web-9", "10.77.1.99")
    before = ok(api.get("/audit", limit=10_000))["items"]
    body = problem(api.as_("editor").delete("/workloads/web-9"), 403)
    assert "live agent" in body["detail"]
    ok(api.get("/workloads/web-9"))
    assert agent.get("/agent/ruleset").status_code == 204  # the credential still works (no version yet)
    assert ok(api.get("/audit", limit=10_000))["items"] == before


def test_an_admin_deleting_a_workload_revokes_its_agent_with_an_audit_record(api: Api) -> None:
    agent, ident = enroll(api, "web-9", "10.77.1.99")
    assert api.as_("admin").delete("/workloads/web-9").status_code == 204
    problem(api.get("/workloads/web-9"), 404)
    problem(agent.get("/agent/ruleset"), 401)
    [record] = [e for e in ok(api.get("/audit", target=f"agent/{ident}"))["items"]]
    assert record["action"] == "revoke-agent" and record["actor"].startswith("token:test-admin(")
    assert record["details"] == {"workload": "web-9"}
    assert actions(api, "Workload/web-9")[-1] == "delete"


def test_an_editor_still_deletes_workloads_without_a_live_agent(api: Api) -> None:
    ok(api.post("/workloads", workload("printer-1", "10.77.9.1", {"role": "printer"})), 201)
    assert api.as_("editor").delete("/workloads/printer-1").status_code == 204
    _, ident = enroll(api, "web-9", "10.77.1.99")
    assert api.as_("admin").delete(f"/agents/{ident}").status_code == 204
    assert api.as_("editor").delete("/workloads/web-9").status_code == 204
    assert actions(api, f"agent/{ident}") == ["revoke-agent"]  # the admin's, not a second one


# --- a long-poll outliving a revocation -------------------------------------------------------------


def waiting(api: Api) -> int:
    text = api.client.get("/metrics", headers=api.headers()).text
    [line] = [x for x in text.splitlines() if x.startswith("microseg_feed_waiting ")]
    return int(float(line.split()[1]))


def test_a_long_poll_open_when_its_agent_is_revoked_answers_401_not_the_next_ruleset(api: Api) -> None:
    agent, ident = enroll(api, "web-9", "10.77.1.99")
    provision_example(api)
    current = ok(agent.get("/agent/ruleset"))["hash"]
    answer: dict[str, httpx.Response] = {}
    poll = threading.Thread(
        target=lambda: answer.setdefault("r", agent.get("/agent/ruleset", known=current, wait=20))
    )
    poll.start()
    deadline = time.monotonic() + 10
    while waiting(api) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert waiting(api) == 1
    assert api.delete(f"/agents/{ident}").status_code == 204
    ok(api.post("/workloads/web-9/quarantine", {"level": "full"}))  # a new ruleset for web-9
    poll.join(20)
    problem(answer["r"], 401)


# --- four eyes: owners, not tokens ------------------------------------------------------------------


@pytest.fixture
def requested(api: Api) -> Api:
    """The example estate with an exception the admin token (owner test-admin) requested."""
    provision_example(api)
    ok(api.post("/exceptions", doc("Exception", "migration", EXCEPTION)), 201)
    return api


def mint(api: Api, name: str, role: str, owner: str | None = None) -> dict[str, Any]:
    body = {"name": name, "role": role, **({"owner": owner} if owner else {})}
    made: dict[str, Any] = ok(api.post("/tokens", body), 201)
    return made


def approved(api: Api) -> bool:
    spec: dict[str, Any] = ok(api.get("/exceptions/migration"))["spec"]
    return "approver" in spec


def test_a_second_token_the_requester_minted_for_another_owner_cannot_approve(requested: Api) -> None:
    second = mint(requested, "second", "editor", owner="bob")
    assert second["owner"] == "bob" and second["created_by"].startswith("token:test-admin(")
    problem(requested.as_(second["token"]).post("/exceptions/migration/approve"), 403)
    assert not approved(requested)


def test_a_minted_token_belongs_to_its_creators_owner_by_default(requested: Api) -> None:
    mine = mint(requested, "mine", "editor")
    assert mine["owner"] == "test-admin"
    body = problem(requested.as_(mine["token"]).post("/exceptions/migration/approve"), 403)
    assert "another user must approve it" in body["detail"]
    assert not approved(requested)


def test_a_token_minted_through_another_minted_token_cannot_approve(requested: Api) -> None:
    bob = mint(requested, "bob", "admin", owner="bob")
    carol = mint(requested.as_(bob["token"]), "carol", "editor", owner="carol")
    problem(requested.as_(carol["token"]).post("/exceptions/migration/approve"), 403)
    assert not approved(requested)


def test_the_owner_who_minted_the_requesters_token_cannot_approve(api: Api) -> None:
    provision_example(api)
    alias = mint(api, "alias", "editor", owner="mallory")
    ok(api.as_(alias["token"]).post("/exceptions", doc("Exception", "migration", EXCEPTION)), 201)
    problem(api.as_("admin").post("/exceptions/migration/approve"), 403)
    assert not approved(api)


def test_another_owners_token_approves_and_both_owners_are_recorded(requested: Api) -> None:
    with requested.db.write() as conn:  # as `microseg token create --owner carol` on the server
        carol = tokens.create_api(conn, "carol-laptop", "editor", "cli:token-create", "carol")[1]
    done = ok(requested.as_(carol).post("/exceptions/migration/approve"))
    assert done["spec"]["approver"].startswith("token:carol-laptop(") and done["spec"]["approver"].endswith(
        ")@carol"
    )
    [entry] = [
        e
        for e in ok(requested.get("/audit", target="Exception/"))["items"]
        if e["action"] == "approve-exception"
    ]
    assert (entry["details"]["requesterOwner"], entry["details"]["approverOwner"]) == ("test-admin", "carol")
    assert entry["details"]["requestedBy"].endswith(")@test-admin")


def test_token_listing_shows_owners(api: Api) -> None:
    mint(api, "ci", "viewer", owner="build-bot")
    found = {t["name"]: t["owner"] for t in ok(api.get("/tokens"))["items"]}
    assert found["ci"] == "build-bot" and found["test-admin"] == "test-admin"


@pytest.mark.parametrize("owner", ["a b", "x(y)", "", "-lead", "é", "o" * 65])
def test_an_owner_that_would_blur_the_audit_actor_is_refused(api: Api, owner: str) -> None:
    problem(api.post("/tokens", {"name": "t", "role": "viewer", "owner": owner}), 422)
    assert [t["name"] for t in ok(api.get("/tokens"))["items"]] == [
        "test-viewer",
        "test-editor",
        "test-admin",
    ]


def test_token_create_on_the_command_line_takes_an_owner(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main.app, ["token", "create", "--role", "editor", "--name", "laptop", "--owner", "carol",
                   "--data-dir", str(tmp_path), "--init"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    db = database.Database(database.sqlite_url(tmp_path))
    with db.read() as conn:
        [row] = conn.execute(sa.select(schema.api_tokens)).all()
    db.dispose()
    assert (row.name, row.owner, row.created_by) == ("laptop", "carol", "cli:token-create")
    refused = CliRunner().invoke(
        main.app, ["token", "create", "--role", "editor", "--owner", "a b", "--data-dir", str(tmp_path)]
    )
    assert refused.exit_code == 2
