"""Drafts, provisioned versions and explained verdicts: edits go to the draft, agents see only
provisioned versions, every version is immutable and numbered, rollback provisions an old one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.server.conftest import CONTROL_PLANE, Api, ok, problem
from tests.server.estates import doc, example, rule


def _setup(api: Api) -> None:
    ok(api.post("/apply", {"documents": example()}))


def explain(api: Api, src: str, dst: str, port: str, version: str = "active") -> dict[str, Any]:
    body = {"from": src, "to": dst, "port": port, "version": version}
    verdict: dict[str, Any] = ok(api.post("/explain", body))["verdict"]
    return verdict


def test_provision_makes_numbered_immutable_versions_and_refuses_an_empty_one(api: Api) -> None:
    _setup(api)
    problem(api.post("/explain", {"from": "prod-web-1", "to": "prod-db-1", "port": "3306/tcp"}), 404)
    v1 = ok(api.post("/versions", {"note": "first"}), 201)
    assert (v1["number"], v1["note"]) == (1, "first") and "Rule/security/dev-never-reaches-prod" in v1[
        "changes"
    ]["added"]
    body = problem(api.post("/versions", {"note": "again"}), 409)
    assert body["title"] == "Nothing to provision"
    shown = ok(api.get("/versions/1"))
    assert len(shown["documents"]) == len(v1["changes"]["added"])
    problem(api.get("/versions/9"), 404)


def test_draft_edits_reach_verdicts_only_when_provisioned(api: Api) -> None:
    _setup(api)
    ok(api.post("/versions", {"note": "v1"}), 201)
    assert explain(api, "prod-web-1", "prod-db-1", "3306/tcp")["outcome"] == "blocked"
    opening = rule("application", "web-to-db-direct", 990, "env=prod,role=web", "env=prod,role=db", ["mysql"])
    ok(api.post("/rules", opening), 201)
    assert explain(api, "prod-web-1", "prod-db-1", "3306/tcp")["outcome"] == "blocked"
    assert (
        explain(api, "prod-web-1", "prod-db-1", "3306/tcp", "draft")["rule"] == "application/web-to-db-direct"
    )
    diff = ok(api.get("/draft/diff"))
    assert diff["rules"]["added"] == ["application/web-to-db-direct"]
    assert diff["objects"]["added"] == ["Rule/application/web-to-db-direct"]
    gained = [c for c in diff["reachability"]["changes"] if c["change"] == "gained"]
    assert {(c["from"], c["to"], c["port"]) for c in gained} >= {("prod-web-1", "prod-db-1", "3306/tcp")}
    assert all(c["after"]["rule"] == "application/web-to-db-direct" for c in gained)
    v2 = ok(api.post("/versions", {"note": "open web to db"}), 201)
    assert v2["number"] == 2 and v2["changes"]["added"] == ["Rule/application/web-to-db-direct"]
    verdict = explain(api, "prod-web-1", "prod-db-1", "3306/tcp")
    assert verdict["outcome"] == "allowed" and verdict["tier"] == "application"
    assert "env=prod" in " ".join(verdict["sourceLabelsMatched"])


def test_diff_any_two_versions_and_rollback(api: Api) -> None:
    _setup(api)
    ok(api.post("/versions", {"note": "v1"}), 201)
    ok(api.delete("/rules/security/dev-never-reaches-prod"), 204)
    ok(api.post("/versions", {"note": "drop guard rail"}), 201)
    assert explain(api, "dev-web-1", "prod-db-1", "3306/tcp")["rule"] != "security/dev-never-reaches-prod"
    diff = ok(api.get("/diff", from_="1", to="2"))
    assert diff["rules"]["removed"] == ["security/dev-never-reaches-prod"]
    ok(api.post("/services", doc("Service", "pending", {"ports": [{"port": 1}]})), 201)
    v3 = ok(api.post("/versions/1/rollback", {"note": "restore the guard rail"}), 201)
    assert (v3["number"], v3["rollbackOf"]) == (3, 1)
    assert explain(api, "dev-web-1", "prod-db-1", "3306/tcp")["rule"] == "security/dev-never-reaches-prod"
    assert ok(api.get("/diff", from_="1", to="3"))["objects"] == {"added": [], "removed": [], "changed": []}
    problem(api.get("/services/pending"), 404)  # the draft became v1's content again
    problem(api.post("/versions/3/rollback", {}), 409)
    problem(api.post("/versions/42/rollback", {}), 404)
    actions = [r["action"] for r in ok(api.get("/audit", target="version/"))["items"]]
    assert actions == ["provision", "provision", "rollback"]
    assert [v["number"] for v in ok(api.get("/versions"))["items"]] == [3, 2, 1]
    problem(api.get("/diff", from_="1", to="banana"), 422)


def test_reverting_the_draft_drops_its_edits(api: Api) -> None:
    _setup(api)
    ok(api.post("/versions", {"note": "v1"}), 201)
    ok(api.delete("/rules/security/dev-never-reaches-prod"), 204)
    reverted = ok(api.delete("/draft"))["reverted"]
    assert reverted["added"] == ["Rule/security/dev-never-reaches-prod"]
    ok(api.get("/rules/security/dev-never-reaches-prod"))
    assert ok(api.get("/draft/diff"))["objects"] == {"added": [], "removed": [], "changed": []}


def test_quarantine_isolates_at_once_and_release_restores(api: Api) -> None:
    _setup(api)
    ok(api.post("/versions", {"note": "v1"}), 201)
    assert explain(api, "prod-app-1", "prod-db-1", "3306/tcp")["outcome"] == "allowed"
    stored = ok(api.post("/workloads/prod-db-1/quarantine"))
    assert stored["metadata"]["labels"]["quarantine"] == "true"
    verdict = explain(api, "prod-app-1", "prod-db-1", "3306/tcp")
    assert (verdict["outcome"], verdict["tier"]) == ("blocked", "quarantine")
    listed = ok(api.get("/workloads", selector="quarantine=true"))["items"]
    assert [w["metadata"]["name"] for w in listed] == ["prod-db-1"] and listed[0]["status"][
        "mode"
    ] == "enforce"
    ok(api.post("/workloads/prod-db-1/release"))
    assert explain(api, "prod-app-1", "prod-db-1", "3306/tcp")["outcome"] == "allowed"
    assert [r["action"] for r in ok(api.get("/audit", target="Workload/prod-db-1"))["items"]][-2:] == [
        "quarantine", "release"]  # fmt: skip
    problem(api.post("/workloads/nope/quarantine"), 404)


def test_mode_scopes_override_workload_modes_live(api: Api) -> None:
    _setup(api)
    ok(api.post("/versions", {"note": "v1"}), 201)
    assert explain(api, "prod-web-1", "prod-db-1", "3306/tcp")["outcome"] == "blocked"
    scope = doc("ModeScope", "prod-alert", {"selector": "env=prod", "mode": "alert", "priority": 10})
    ok(api.post("/modescopes", scope), 201)
    verdict = explain(api, "prod-web-1", "prod-db-1", "3306/tcp")
    assert (verdict["decision"], verdict["outcome"], verdict["destinationMode"]) == (
        "deny",
        "would-block",
        "alert",
    )
    status = ok(api.get("/workloads", selector="env=prod,role=db"))["items"][0]["status"]
    assert (status["mode"], status["modeFrom"]) == ("alert", "ModeScope/prod-alert")
    ok(api.put("/workloads/prod-db-1/mode", {"mode": "visibility"}))
    problem(api.put("/workloads/prod-db-1/mode", {"mode": "block-all"}), 422)
    problem(api.post("/modescopes", doc("ModeScope", "bad", {"selector": "env=prod", "mode": "loud"})), 422)


def test_exceptions_override_guard_rails_until_they_expire(api: Api) -> None:
    _setup(api)
    soon = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    past = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    spec = {"owner": "dba", "reason": "data migration", "ticket": "CHG-1", "from": [{"selector": "env=dev,role=web"}],
            "to": [{"selector": "env=prod,role=db"}], "services": ["mysql"]}  # fmt: skip
    ok(api.post("/exceptions", doc("Exception", "migration", {**spec, "expires": soon})), 201)
    ok(api.post("/exceptions", doc("Exception", "old", {**spec, "expires": past})), 201)
    for name in ("migration", "old"):  # four eyes: the admin asked, an editor approves
        ok(api.as_("editor").post(f"/exceptions/{name}/approve"))
    ok(api.post("/versions", {"note": "with exceptions"}), 201)
    verdict = explain(api, "dev-web-1", "prod-db-1", "3306/tcp")
    assert (verdict["decision"], verdict["tier"], verdict["rule"]) == (
        "allow",
        "exception",
        "exception/migration",
    )
    assert "CHG-1" in verdict["reason"]
    ok(api.delete("/exceptions/migration"), 204)
    ok(api.post("/versions", {"note": "exception withdrawn"}), 201)
    assert explain(api, "dev-web-1", "prod-db-1", "3306/tcp")["rule"] == "security/dev-never-reaches-prod"
    body = problem(api.post("/exceptions", doc("Exception", "lazy", {"reason": "x", "from": "any", "to": "any",
                                                                    "services": "any"})), 422)  # fmt: skip
    assert {p["field"] for p in body["problems"]} == {"spec.owner", "spec.expires"}
    bad_time = doc("Exception", "when", {**spec, "expires": "tomorrow"})
    assert problem(api.post("/exceptions", bad_time), 422)["problems"][0]["field"] == "spec.expires"


def test_the_control_plane_stays_open_whatever_the_settings_say(api: Api) -> None:
    _setup(api)
    ok(api.put("/settings/settings", doc("Settings", "settings", {"quarantineAllow": "forensics"})))
    ok(api.post("/versions", {"note": "no control plane in settings"}), 201)
    address, port = CONTROL_PLANE.split(":")
    verdict = explain(api, "prod-db-1", address, f"{port}/tcp")
    assert verdict["outcome"] == "allowed" and verdict["tier"] == "system"
    ok(api.post("/workloads/prod-db-1/quarantine"))
    assert explain(api, "prod-db-1", address, f"{port}/tcp")["outcome"] == "allowed"
