"""Agents: enrollment, heartbeat and inventory, the ruleset long-poll, status, flows and events.

An agent credential only ever reaches its own workload: the server takes the workload from the
credential, so there is no request an agent could make about another one."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from microseg.model import ruleset
from microseg.server import config
from tests.server.conftest import CONTROL_PLANE, Api, make_settings, ok, problem
from tests.server.estates import provision_example, rule


@pytest.fixture
def settings(database_url: str) -> config.ServerSettings:
    return make_settings(database_url, offline_after=1.0, enroll_per_minute=8)


def enroll(api: Api, hostname: str, address: str, **token: Any) -> Api:
    made = ok(api.post("/enrollment-tokens", {"name": hostname, **token}), 201)
    body = {
        "token": made["token"],
        "inventory": {"hostname": hostname, "addresses": [address], "os": "linux"},
    }
    enrolled = ok(api.as_("none").post("/agent/enroll", body), 201)
    assert enrolled["workload"] == hostname and enrolled["credential"].startswith("msa_")
    return api.as_(enrolled["credential"])


def _provisioned(api: Api) -> None:
    provision_example(api)


def test_enrollment_creates_the_workload_with_the_token_labels_and_mode(api: Api) -> None:
    enroll(api, "web-9", "10.77.1.99", labels={"env": "prod", "app": "crm", "role": "web"}, mode="alert")
    stored = ok(api.get("/workloads/web-9"))
    assert stored["metadata"]["labels"] == {"app": "crm", "env": "prod", "role": "web"}
    assert stored["spec"]["mode"] == "alert" and stored["spec"]["attributes"]["hostname"] == "web-9"
    assert ok(api.get("/audit", target="Workload/web-9"))["items"][0]["action"] == "enroll"


def test_enrollment_tokens_are_one_time_unless_reusable_and_rate_limited(api: Api) -> None:
    once = ok(api.post("/enrollment-tokens", {"name": "once"}), 201)["token"]
    inventory = {"hostname": "h1", "addresses": ["10.5.0.1"]}
    ok(api.as_("none").post("/agent/enroll", {"token": once, "inventory": inventory}), 201)
    again = {"token": once, "inventory": {"hostname": "h2", "addresses": ["10.5.0.2"]}}
    problem(api.as_("none").post("/agent/enroll", again), 401)
    reusable = ok(api.post("/enrollment-tokens", {"name": "many", "reusable": True}), 201)["token"]
    ok(api.as_("none").post("/agent/enroll", {**again, "token": reusable}), 201)
    twice = {"token": reusable, "inventory": inventory}
    assert problem(api.as_("none").post("/agent/enroll", twice), 409)["detail"].startswith(
        "workload h1 already"
    )
    codes = [
        api.as_("none").post("/agent/enroll", {**again, "token": "mse_x_y"}).status_code for _ in range(8)
    ]
    assert 429 in codes and set(codes) <= {401, 429}


def test_an_enrolled_address_clash_changes_nothing(api: Api) -> None:
    _provisioned(api)
    token = ok(api.post("/enrollment-tokens", {"name": "t"}), 201)["token"]
    clash = {"token": token, "inventory": {"hostname": "imposter", "addresses": ["10.77.1.31"]}}
    problem(api.as_("none").post("/agent/enroll", clash), 422)
    problem(api.get("/workloads/imposter"), 404)


def test_each_agent_gets_only_its_own_ruleset(api: Api) -> None:
    web = enroll(api, "web-9", "10.77.1.99", labels={"env": "prod", "app": "crm", "role": "web"})
    db = enroll(api, "db-9", "10.77.1.98", labels={"env": "prod", "app": "crm", "role": "db"})
    _provisioned(api)
    assert ok(web.get("/agent/ruleset"))["workload"]["name"] == "web-9"
    assert ok(db.get("/agent/ruleset"))["workload"]["name"] == "db-9"
    ok(web.post("/agent/status", {"appliedHash": "sha256:" + "0" * 64}))
    agents = {a["workload"]: a for a in ok(api.get("/agents"))["items"]}
    assert agents["web-9"]["appliedHash"] == "sha256:" + "0" * 64 and agents["db-9"]["appliedHash"] is None


def test_the_feed_answers_at_once_when_stale_and_waits_when_current(api: Api) -> None:
    agent = enroll(api, "web-9", "10.77.1.99", labels={"env": "prod", "app": "crm", "role": "web"})
    assert agent.get("/agent/ruleset").status_code == 204  # nothing provisioned yet
    _provisioned(api)
    first = agent.get("/agent/ruleset")
    doc = ruleset.RulesetDocument.from_dict(ok(first))
    assert doc.workload == "web-9" and doc.policy_version == "v1" and first.headers["etag"] == f'"{doc.hash}"'
    assert CONTROL_PLANE.split(":")[0] + "/32" in {str(e.network) for e in doc.control_plane}
    started = time.monotonic()
    assert agent.get("/agent/ruleset", known=doc.hash, wait=0.3).status_code == 304
    assert time.monotonic() - started >= 0.3
    assert agent.call("GET", "/agent/ruleset", headers={"If-None-Match": f'"{doc.hash}"'}).status_code == 304
    answer: dict[str, Any] = {}

    def long_poll() -> None:
        answer["response"] = agent.get("/agent/ruleset", known=doc.hash, wait=20)

    waiter = threading.Thread(target=long_poll)
    waiter.start()
    time.sleep(0.3)
    ok(
        api.post("/rules", rule("application", "lb-to-web9", 991, "role=lb", "role=web", [{"port": 8080}])),
        201,
    )
    time.sleep(0.3)
    assert waiter.is_alive(), "a draft edit must not reach agents"
    ok(api.post("/versions", {"note": "v2"}), 201)
    waiter.join(10)
    newer = ruleset.RulesetDocument.from_dict(ok(answer["response"]))
    assert newer.policy_version == "v2" and newer.hash != doc.hash
    assert any(e.ref == "application/lb-to-web9" for e in newer.ingress)


def test_a_live_relabel_reaches_the_agent_without_a_provision(api: Api) -> None:
    agent = enroll(api, "web-9", "10.77.1.99", labels={"env": "prod", "app": "crm", "role": "web"})
    _provisioned(api)
    before = ruleset.RulesetDocument.from_dict(ok(agent.get("/agent/ruleset")))
    ok(api.post("/workloads/web-9/quarantine"))
    after = ruleset.RulesetDocument.from_dict(ok(agent.get("/agent/ruleset", known=before.hash, wait=5)))
    assert after.policy_version == "v1" and after.mode.value == "enforce"
    refs = [e.ref for e in after.ingress]
    assert "quarantine/isolate-in" in refs and refs[0].startswith("quarantine/")


def test_status_shows_in_sync_stale_failed_and_tampered(api: Api) -> None:
    agent = enroll(api, "web-9", "10.77.1.99", labels={"env": "prod", "app": "crm", "role": "web"})
    _provisioned(api)

    def state() -> str:
        agents = ok(api.get("/agents"))["items"]
        workload = ok(api.get("/workloads/web-9"))
        listed = ok(api.get("/workloads", selector="role=web"))["items"]
        found = next(w for w in listed if w["metadata"]["name"] == "web-9")
        assert found["status"]["agent"] == agents[0]["state"] and workload
        metrics = api.client.get("/metrics", headers=api.headers()).text
        counted = {s: f'microseg_agents{{state="{s}"}} {int(s == agents[0]["state"])}' in metrics
                   for s in ("in sync", "stale", "failed", "tampered")}  # fmt: skip
        assert all(counted.values()), (agents[0]["state"], metrics)  # /metrics counts what /agents says
        return str(agents[0]["state"])

    assert state() == "stale"
    doc = ok(agent.get("/agent/ruleset"))
    ok(agent.post("/agent/status", {"appliedHash": doc["hash"], "dataplane": "nftables"}))
    assert state() == "in sync"
    ok(api.post("/workloads/web-9/quarantine"))
    assert state() == "stale"
    ok(agent.post("/agent/status", {"appliedHash": doc["hash"], "errors": ["nft: syntax error"]}))
    assert state() == "failed"
    ok(agent.post("/agent/status", {"appliedHash": doc["hash"], "tampered": True}))
    assert state() == "tampered"
    found = ok(api.get("/events", workload="web-9"))["items"]
    # agent-offline depends on how long this test takes (offline_after is 1 s); the offline
    # detector has its own test below
    kinds = [e["kind"] for e in found if e["kind"] != "agent-offline"]
    assert kinds == ["quarantine", "agent-failed", "tamper"]  # the quarantine is an event too
    metrics = api.client.get("/metrics", headers=api.headers()).text
    assert 'microseg_agents{state="tampered"} 1' in metrics and "microseg_provisions_total 1" in metrics


def test_each_reported_tamper_incident_is_one_event_and_warnings_are_shown(api: Api) -> None:
    agent = enroll(api, "web-9", "10.77.1.99", labels={"env": "prod", "app": "crm", "role": "web"})
    _provisioned(api)
    doc = ok(agent.get("/agent/ruleset"))
    incident = {
        "at": 1.0,
        "summary": "the table was deleted",
        "changes": ["- the whole table"],
        "restoredIn": 0.01,
    }
    warning = "application/db (ingress): process mysqld not enforced: no cgroup known; enforced at port level"
    report = {"appliedHash": doc["hash"], "tampered": True, "warnings": [warning]}
    ok(agent.post("/agent/status", {**report, "tamper": [incident]}))
    ok(agent.post("/agent/status", report))  # the same incident is not reported twice
    ok(
        agent.post(
            "/agent/status", {**report, "tamper": [{**incident, "at": 2.0, "summary": "1 line(s) removed"}]}
        )
    )
    events = ok(api.get("/events", kind="tamper"))["items"]
    assert [e["details"]["summary"] for e in events] == ["the table was deleted", "1 line(s) removed"]
    assert events[0]["details"]["changes"] == ["- the whole table"]
    assert "restored in 0.01s" in events[0]["message"]
    assert ok(api.get("/agents"))["items"][0]["warnings"] == [warning]
    bad = agent.post("/agent/status", {**report, "tamper": [{"summary": "x"}]})
    assert bad.status_code == 422


def test_heartbeat_updates_the_inventory_and_silence_marks_offline(api: Api) -> None:
    agent = enroll(api, "web-9", "10.77.1.99")
    inventory = {"hostname": "web-9", "addresses": ["10.77.1.98"], "os": "linux", "kernel": "6.18",
                 "sockets": [{"protocol": "tcp", "address": "0.0.0.0", "port": 443, "process": "nginx"}]}  # fmt: skip
    assert ok(agent.post("/agent/heartbeat", inventory))["changed"] is True
    stored = ok(api.get("/workloads/web-9"))
    assert stored["spec"]["addresses"] == ["10.77.1.98"] and stored["spec"]["attributes"]["kernel"] == "6.18"
    assert ok(agent.post("/agent/heartbeat", inventory))["changed"] is False
    assert ok(api.get("/agents"))["items"][0]["inventory"]["sockets"][0]["process"] == "nginx"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not ok(api.get("/events", kind="agent-offline"))["items"]:
        time.sleep(0.2)
    offline = ok(api.get("/events", kind="agent-offline"))["items"]
    assert [e["workload"] for e in offline] == ["web-9"]
    assert ok(api.get("/agents"))["items"][0]["online"] is False
    ok(agent.post("/agent/heartbeat", inventory))
    assert ok(api.get("/agents"))["items"][0]["online"] is True


NOW = time.time()
"""Flow records are dated now: ingest refuses times outside the retention and the clock skew."""


def _flow(verdict: str, port: int = 443, **more: Any) -> dict[str, Any]:
    return {"direction": "in", "src": "10.77.2.11", "dst": "10.77.1.99", "dport": port, "proto": "tcp",
            "process": "nginx", "bytes": 100, "packets": 2, "first_seen": NOW - 60, "last_seen": NOW - 59,
            "verdict": verdict, **more}  # fmt: skip


def test_flow_batches_are_idempotent_and_blocked_flows_raise_events(api: Api) -> None:
    agent = enroll(api, "web-9", "10.77.1.99")
    records = [
        _flow("allowed"),
        _flow("blocked", 22, rule="security/dev-never-reaches-prod"),
        _flow("blocked", 22),
    ]
    records.append(_flow("would-block", 3306))
    first = ok(agent.post("/agent/flows", {"batch_id": "b-1", "records": records}))
    assert (first["stored"], first["records"]) == (True, 4)
    again = ok(agent.post("/agent/flows", {"batch_id": "b-1", "records": records}))
    assert (again["stored"], again["records"]) == (False, 0)
    stored = ok(api.get("/flows", workload="web-9"))["items"]
    assert len(stored) == 4 and {f["verdict"] for f in stored} == {"allowed", "blocked", "would-block"}
    assert len(ok(api.get("/flows", port=22, verdict="blocked"))["items"]) == 2
    assert ok(api.get("/flows", address="10.77.2.11", limit=1))["items"][0]["workload"] == "web-9"
    assert (
        ok(api.get("/flows", explain="true", limit=1))["items"][0]["currentVerdict"] is None
    )  # nothing provisioned
    _provisioned(api)
    explained = ok(api.get("/flows", explain="true", port=22))["items"]
    verdict = explained[0]["currentVerdict"]  # dev-web-1 -> web-9, which has no labels: no rule allows it
    assert (verdict["decision"], verdict["rule"]) == ("deny", None) and "default deny" in verdict["reason"]
    kinds = sorted(e["kind"] for e in ok(api.get("/events"))["items"])
    assert kinds == ["blocked", "blocked", "would-block"]
    problem(
        agent.post("/agent/flows", {"batch_id": "b-2", "records": [{**_flow("allowed"), "proto": "bogus"}]}),
        422,
    )
    assert len(ok(api.get("/flows"))["items"]) == 4
    assert "microseg_flow_records_ingested_total 4" in api.client.get("/metrics", headers=api.headers()).text


def test_an_agent_whose_workload_was_deleted_is_cut_off(api: Api) -> None:
    agent = enroll(api, "web-9", "10.77.1.99")
    ok(api.delete("/workloads/web-9"), 204)
    problem(agent.get("/agent/ruleset"), 401)
    assert ok(api.get("/agents"))["items"][0]["revoked"] is True
