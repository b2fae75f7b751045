"""Trust boundaries of enrollment and inventory (issue 15): what an agent may say about itself.

An attacker holds the reusable enrollment token of the dev estate (labels env=dev) and one
enrolled host's credential. They must not take over another workload by its hostname (also
spelled with another case or a trailing dot), inherit its labels, buy labels through a hostname
label rule, or squat addresses outside the token's ranges or held by another workload. An admin
who binds a token to a workload does get it adopted, audited and announced.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from microseg.cli import main
from microseg.server import config
from microseg.store import agents
from tests.server.conftest import Api, make_settings, ok, problem
from tests.server.estates import doc, provision_example

DEV = {"env": "dev"}


@pytest.fixture
def settings(database_url: str) -> config.ServerSettings:
    return make_settings(database_url, enroll_per_minute=10_000)


def token(api: Api, labels: dict[str, str] | None = None, **more: Any) -> dict[str, Any]:
    """A new enrollment token as created (with its text under `token`)."""
    body = {"name": "t", "labels": labels if labels is not None else DEV, "reusable": True, **more}
    made: dict[str, Any] = ok(api.post("/enrollment-tokens", body), 201)
    return made


def attempt(api: Api, secret: str, hostname: str, *addresses: str) -> Any:
    """An enrollment call (the raw response)."""
    inventory = {"hostname": hostname, "addresses": list(addresses), "os": "linux"}
    return api.as_("none").post("/agent/enroll", {"token": secret, "inventory": inventory})


def enrolled(api: Api, secret: str, hostname: str, *addresses: str) -> Api:
    """The new agent's client."""
    return api.as_(ok(attempt(api, secret, hostname, *addresses), 201)["credential"])


def workload(api: Api, name: str) -> dict[str, Any]:
    found: dict[str, Any] = ok(api.get(f"/workloads/{name}"))
    return found


def effective(api: Api, name: str) -> dict[str, str]:
    """A workload's labels after label rules (as the listing shows them)."""
    listed = ok(api.get("/workloads"))["items"]
    found: dict[str, str] = next(w for w in listed if w["metadata"]["name"] == name)["status"][
        "effectiveLabels"
    ]
    return found


def kinds_of(api: Api, **query: str) -> list[str]:
    return [e["kind"] for e in ok(api.get("/events", **query))["items"]]


def heartbeat(agent: Api, hostname: str, *addresses: str) -> dict[str, Any]:
    body = {"hostname": hostname, "addresses": list(addresses), "os": "linux"}
    answer: dict[str, Any] = ok(agent.post("/agent/heartbeat", body))
    return answer


# --- identity ------------------------------------------------------------------------------------


def test_an_unbound_token_cannot_take_over_an_unmanaged_device_with_a_trailing_dot(api: Api) -> None:
    provision_example(api)
    before = workload(api, "legacy-billing")
    dev = token(api)
    refused = problem(attempt(api, dev["token"], "legacy-billing.", "10.20.0.5"), 409)
    assert "not bound" in refused["detail"] and "normalised" in refused["detail"]
    after = workload(api, "legacy-billing")
    assert after["spec"] == before["spec"] and after["spec"]["kind"] == "unmanaged"
    assert after["metadata"]["labels"] == {"env": "prod", "role": "billing"}
    assert ok(api.get("/agents"))["items"] == []
    assert kinds_of(api, workload="legacy-billing") == ["enroll-refused"]
    record = ok(api.get("/audit", target="Workload/legacy-billing", actor=f"enrollment:{dev['id']}"))["items"]
    assert [r["action"] for r in record] == ["enroll-refused"]
    # an admin's binding does not make an unmanaged device adoptable either
    bound = token(api, workloads=["legacy-billing"])
    assert "unmanaged" in problem(attempt(api, bound["token"], "legacy-billing", "10.77.9.50"), 409)["detail"]
    assert workload(api, "legacy-billing")["spec"] == before["spec"]


def test_an_unbound_token_cannot_adopt_a_declared_workload_nor_read_its_ruleset(api: Api) -> None:
    provision_example(api)
    before = workload(api, "prod-db-1")
    once = token(api, reusable=False)
    problem(attempt(api, once["token"], "prod-db-1", "10.77.1.31"), 409)
    assert workload(api, "prod-db-1")["metadata"] == before["metadata"]
    assert workload(api, "prod-db-1")["spec"] == before["spec"]
    assert ok(api.get("/agents"))["items"] == []
    # the refusal does not use up a one-time token: it still enrolls a host of its own
    agent = enrolled(api, once["token"], "dev-new-1", "10.20.0.7")
    assert ok(agent.get("/agent/ruleset"))["workload"]["name"] == "dev-new-1"


def test_case_trailing_dots_and_rewritten_characters_cannot_alias_an_existing_workload(api: Api) -> None:
    provision_example(api)
    dev = token(api)
    for hostname in ("PROD-DB-1", "prod-db-1.", "Prod-Db-1.", "prod db 1", "prod-db-1.."):
        problem(attempt(api, dev["token"], hostname, "10.20.0.5"), 409)
    assert kinds_of(api, workload="prod-db-1") == ["enroll-refused"] * 5
    names = {w["metadata"]["name"] for w in ok(api.get("/workloads"))["items"]}
    assert not {"PROD-DB-1", "Prod-Db-1"} & names and ok(api.get("/agents"))["items"] == []


def test_a_new_workload_gets_exactly_the_token_labels_and_mode_and_agent_sourced_attributes(api: Api) -> None:
    provision_example(api)
    dev = token(api, mode="alert")
    agent = enrolled(api, dev["token"], "dev-db-9", "10.20.0.9")
    made = workload(api, "dev-db-9")
    assert made["metadata"]["labels"] == DEV and made["spec"]["mode"] == "alert"
    # the hostname label rule (`*-db-*` -> role=db) does not believe the agent's own word
    assert "role" not in effective(api, "dev-db-9")
    assert made["spec"]["attributeSources"] == {"hostname": "agent", "os": "agent"}
    assert ok(agent.get("/agent/ruleset"))["workload"]["name"] == "dev-db-9"
    with api.db.read() as conn:
        assert (agents.by_workload(conn, "dev-db-9") or {})["enrollment_token"] == dev["id"]
    assert ok(api.get("/agents"))["items"][0]["enrollmentToken"] == dev["id"]


def test_a_bound_token_adopts_its_workload_keeping_the_operator_labels_audited(api: Api) -> None:
    provision_example(api)
    bound = token(api, {"team": "dba", "env": "dev"}, mode="alert", workloads=["prod-db-1"])
    agent = enrolled(api, bound["token"], "prod-db-1", "10.77.1.31")
    adopted = workload(api, "prod-db-1")
    assert adopted["metadata"]["labels"] == {"env": "prod", "app": "crm", "team": "dba"}
    assert adopted["spec"]["mode"] == "enforce"  # what the operator declared
    assert adopted["spec"]["attributeSources"] == {"hostname": "enrollment", "os": "enrollment"}
    assert effective(api, "prod-db-1")["role"] == "db"  # an admin vouched for the pairing
    assert ok(agent.get("/agent/ruleset"))["workload"]["name"] == "prod-db-1"
    assert kinds_of(api, workload="prod-db-1") == ["enroll-adopted"]
    record = ok(api.get("/audit", target="Workload/prod-db-1", actor=f"enrollment:{bound['id']}"))["items"]
    assert [r["action"] for r in record] == ["enroll-adopted"]
    assert record[0]["details"]["before"]["metadata"]["labels"] == {"env": "prod", "app": "crm"}
    listed = {t["id"]: t for t in ok(api.get("/enrollment-tokens"))["items"]}
    assert listed[bound["id"]]["workloads"] == ["prod-db-1"]


def test_a_workload_with_a_live_agent_is_refused_and_a_revoked_agent_makes_room(api: Api) -> None:
    first = enrolled(api, token(api)["token"], "dev-web-1", "10.77.1.41")
    bound = token(api, workloads=["dev-web-1"])
    refused = problem(attempt(api, bound["token"], "dev-web-1", "10.77.1.41"), 409)
    assert "already has an agent" in refused["detail"]
    record = ok(api.get("/audit", target="Workload/dev-web-1", actor=f"enrollment:{bound['id']}"))["items"]
    assert [(r["action"], r["details"]["reason"]) for r in record] == [("enroll-refused", "has an agent")]
    old_id = ok(api.get("/agents"))["items"][0]["id"]
    ok(api.delete(f"/agents/{old_id}"), 204)
    second = enrolled(api, bound["token"], "dev-web-1", "10.77.1.41")
    listed = ok(api.get("/agents"))["items"]
    assert [a["workload"] for a in listed] == ["dev-web-1"] and listed[0]["id"] != old_id
    problem(first.get("/agent/ruleset"), 401)
    assert ok(second.post("/agent/heartbeat", {"hostname": "dev-web-1", "addresses": ["10.77.1.41"],
                                               "os": "linux"}))["workload"] == "dev-web-1"  # fmt: skip


def test_a_hostname_whose_workload_was_deleted_enrolls_again_with_a_new_agent(api: Api) -> None:
    secret = token(api)["token"]
    first = enrolled(api, secret, "dev-web-2", "10.77.1.42")
    ok(api.delete("/workloads/dev-web-2"), 204)  # revokes its agent, whose row stays
    second = enrolled(api, secret, "dev-web-2", "10.77.1.42")
    problem(first.get("/agent/ruleset"), 401)
    assert workload(api, "dev-web-2")["spec"]["addresses"] == ["10.77.1.42"]
    assert [a["revoked"] for a in ok(api.get("/agents"))["items"]] == [False]
    assert ok(second.post("/agent/heartbeat", {"hostname": "dev-web-2", "addresses": ["10.77.1.42"],
                                               "os": "linux"}))["workload"] == "dev-web-2"  # fmt: skip


# --- attributes and labels -----------------------------------------------------------------------


def test_a_hostname_reported_in_a_heartbeat_does_not_buy_a_label(api: Api) -> None:
    provision_example(api)
    agent = enrolled(api, token(api)["token"], "h1", "10.20.0.1")
    assert heartbeat(agent, "h1-db-1", "10.20.0.1")["changed"] is True
    assert "role" not in effective(api, "h1")
    assert "h1" not in {w["metadata"]["name"] for w in ok(api.get("/workloads", selector="role=db"))["items"]}
    reported = workload(api, "h1")
    assert reported["spec"]["attributes"]["hostname"] == "h1-db-1"
    assert reported["spec"]["attributeSources"]["hostname"] == "agent"


def test_a_heartbeat_after_a_bound_adoption_makes_the_changed_hostname_the_agent_s_word(api: Api) -> None:
    provision_example(api)
    agent = enrolled(api, token(api, workloads=["prod-db-1"])["token"], "prod-db-1", "10.77.1.31")
    heartbeat(agent, "prod-db-1", "10.77.1.31")
    assert workload(api, "prod-db-1")["spec"]["attributeSources"]["hostname"] == "enrollment"
    heartbeat(agent, "prod-db-2", "10.77.1.31")
    changed = workload(api, "prod-db-1")
    assert changed["spec"]["attributeSources"] == {"hostname": "agent", "os": "enrollment"}
    assert "role" not in effective(api, "prod-db-1")
    [event] = ok(api.get("/events", kind="labels-changed"))["items"]
    assert event["workload"] == "prod-db-1"
    assert event["details"]["before"]["role"] == "db" and "role" not in event["details"]["after"]


def test_an_inventory_that_changes_effective_labels_raises_labels_changed(api: Api) -> None:
    rule = doc(
        "LabelRule", "lab-net", {"priority": 50, "match": {"cidr": "10.20.5.0/24"}, "labels": {"zone": "lab"}}
    )
    ok(api.post("/apply", {"documents": [rule]}))
    agent = enrolled(api, token(api)["token"], "h1", "10.20.0.1")
    heartbeat(agent, "h1", "10.20.0.1")
    assert kinds_of(api, kind="labels-changed") == []
    heartbeat(agent, "h1", "10.20.5.7")
    [event] = ok(api.get("/events", kind="labels-changed"))["items"]
    assert (event["workload"], event["details"]) == ("h1", {"before": DEV, "after": {**DEV, "zone": "lab"}})


# --- addresses -----------------------------------------------------------------------------------


def test_a_heartbeat_cannot_squat_addresses_outside_its_ranges_or_held_by_another_workload(api: Api) -> None:
    provision_example(api)
    dev = token(api, addressRanges=["10.20.0.0/16"])
    other = enrolled(api, dev["token"], "h2", "10.20.0.2")
    agent = enrolled(api, dev["token"], "h1", "10.20.0.1")
    squat = ("10.20.0.1", "10.77.1.200", "10.77.1.201", "10.20.0.2")
    assert heartbeat(agent, "h1", *squat)["changed"] is False  # the rest of the report is accepted
    assert workload(api, "h1")["spec"]["addresses"] == ["10.20.0.1"]
    refused = ok(api.get("/events", kind="address-refused"))["items"]
    assert {(e["details"]["address"], e["details"]["agent"]) for e in refused} == {
        (a, agent.who.split("_")[1]) for a in squat[1:]
    }
    assert "held by workload h2" in next(
        e["message"] for e in refused if e["details"]["address"] == "10.20.0.2"
    )
    heartbeat(agent, "h1", *squat)  # the same claim again is no news
    assert len(ok(api.get("/events", kind="address-refused"))["items"]) == 3
    # the real host of a squatted prod address still enrolls with it
    prod = token(api, {"env": "prod"}, addressRanges=["10.77.1.0/24"])
    enrolled(api, prod["token"], "prod-new-1", "10.77.1.200")
    assert heartbeat(other, "h2", "10.20.0.2")["workload"] == "h2"


def test_a_token_without_ranges_still_cannot_claim_a_declared_or_unmanaged_address(api: Api) -> None:
    provision_example(api)
    agent = enrolled(api, token(api)["token"], "h1", "10.20.0.1")
    heartbeat(agent, "h1", "10.20.0.1", "10.77.1.31", "10.77.9.50")
    assert workload(api, "h1")["spec"]["addresses"] == ["10.20.0.1"]
    assert workload(api, "prod-db-1")["spec"]["addresses"] == ["10.77.1.31"]
    held = {
        e["details"]["address"]: e["details"]["reason"]
        for e in ok(api.get("/events", kind="address-refused"))["items"]
    }
    assert held == {
        "10.77.1.31": "held by workload prod-db-1",
        "10.77.9.50": "held by workload legacy-billing",
    }
    # a report of only refused addresses leaves the workload where it was
    heartbeat(agent, "h1", "10.77.1.31")
    assert workload(api, "h1")["spec"]["addresses"] == ["10.20.0.1"]


def test_enrollment_drops_addresses_outside_the_ranges_and_refuses_when_none_is_left(api: Api) -> None:
    dev = token(api, addressRanges=["10.20.0.0/16", "fd00:20::/32"])
    problem(attempt(api, dev["token"], "h1", "10.77.1.200"), 422)
    problem(api.get("/workloads/h1"), 404)
    assert kinds_of(api, workload="h1") == ["enroll-refused"]
    enrolled(api, dev["token"], "h1", "10.20.0.9", "10.77.1.200", "fd00:20::9")
    assert workload(api, "h1")["spec"]["addresses"] == ["10.20.0.9", "fd00:20::9"]
    assert kinds_of(api, workload="h1") == ["enroll-refused", "address-refused"]


def test_bad_bindings_and_ranges_are_refused_when_the_token_is_made(api: Api) -> None:
    for bad in ({"addressRanges": ["10.20.0.1/16"]}, {"addressRanges": ["nowhere"]}, {"workloads": ["a b"]}):
        problem(api.post("/enrollment-tokens", {"name": "t", **bad}), 422)
    assert ok(api.get("/enrollment-tokens"))["items"] == []
    made = token(api, addressRanges=["10.20.0.0/16"], workloads=["prod-db-1"])
    assert (made["address_ranges"], made["workloads"]) == (["10.20.0.0/16"], ["prod-db-1"])


def test_the_cli_makes_bound_and_ranged_tokens_and_lists_them(api: Api) -> None:
    base = ["--server", str(api.client.base_url), "--token", api.tokens["admin"]]
    runner = CliRunner()
    made = runner.invoke(main.app, [*base, "enrollment-token", "create", "db", "-L", "env=prod", "--mode", "alert",
                                    "--workload", "prod-db-1", "--address-range", "10.77.1.0/24", "-o", "json"])  # fmt: skip
    assert made.exit_code == 0, made.output
    listed = runner.invoke(main.app, [*base, "enrollment-token", "list", "-o", "json"])
    [row] = json.loads(listed.output)
    assert (row["labels"], row["mode"], row["workloads"], row["address_ranges"]) == (
        {"env": "prod"},
        "alert",
        ["prod-db-1"],
        ["10.77.1.0/24"],
    )
    bad = runner.invoke(main.app, [*base, "enrollment-token", "create", "x", "--address-range", "somewhere"])
    assert bad.exit_code == 2 and "addressRanges" in bad.output
    assert len(ok(api.get("/enrollment-tokens"))["items"]) == 1
