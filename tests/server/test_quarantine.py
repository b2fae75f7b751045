"""Quarantine: levels (forensics keeps the quarantineAllow list, full keeps nothing but the control
plane), release restores exactly the labels and mode from before, every step audited and an
event; the signed webhook names a workload by name, address or hostname, and refuses bad,
stale and replayed signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from microseg.server import config
from tests.server.conftest import Api, make_settings, ok, problem
from tests.server.estates import provision_example

SECRET = "edr-s3cret"
FORENSICS = "10.77.250.9"  # in the example estate's `forensics` IP list


@pytest.fixture
def settings(database_url: str) -> config.ServerSettings:
    return make_settings(database_url, hook_secrets=(f"edr:quarantine+release={SECRET}", "siem=other"))


@pytest.fixture
def estate(api: Api) -> Api:
    provision_example(api)
    return api


def explain(api: Api, src: str, dst: str, port: str) -> dict[str, Any]:
    found: dict[str, Any] = ok(api.post("/explain", {"from": src, "to": dst, "port": port}))["verdict"]
    return found


def workload(api: Api, name: str) -> dict[str, Any]:
    found: dict[str, Any] = ok(api.get(f"/workloads/{name}"))
    return found


def hook(api: Api, body: dict[str, Any], *, name: str = "edr", secret: str = SECRET, at: float | None = None,
         signature: str | None = None) -> Any:  # fmt: skip
    raw = json.dumps(body).encode()
    stamp = str(int(at if at is not None else time.time()))
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    headers = {"X-Microseg-Hook": name, "X-Microseg-Timestamp": stamp,
               "X-Microseg-Signature": signature or f"sha256={mac}", "Content-Type": "application/json"}  # fmt: skip
    return api.client.post("/api/v1/hooks/quarantine", content=raw, headers=headers)


def test_forensics_level_keeps_the_forensics_list_and_full_does_not(estate: Api) -> None:
    assert explain(estate, "prod-app-1", "prod-web-1", "443/tcp")["decision"] == "deny"  # by default deny
    assert explain(estate, "prod-web-1", "prod-app-1", "8443/tcp")["decision"] == "allow"
    ok(estate.post("/workloads/prod-web-1/quarantine", {"level": "forensics", "reason": "EDR alert"}))
    ok(estate.post("/versions", {"note": "keep the draft moving"}), 409)  # quarantine is live, not policy
    cut = explain(estate, "prod-web-1", "prod-app-1", "8443/tcp")
    assert (cut["decision"], cut["rule"]) == ("deny", "quarantine/isolate-out")
    assert explain(estate, FORENSICS, "prod-web-1", "22/tcp")["rule"] == "quarantine/allow-forensics-in"
    ok(estate.post("/workloads/prod-web-1/quarantine", {"level": "full"}))
    assert explain(estate, FORENSICS, "prod-web-1", "22/tcp")["rule"] == "quarantine/isolate-in"
    assert workload(estate, "prod-web-1")["metadata"]["labels"]["quarantine"] == "full"


def test_release_restores_exactly_the_labels_and_mode_from_before(estate: Api) -> None:
    before = workload(estate, "dev-web-1")
    ok(estate.put("/workloads/dev-web-1/mode", {"mode": "alert"}))
    ok(estate.post("/labels/bulk", {"workloads": ["dev-web-1"], "add": {"owner": "team-a"}, "remove": []}))
    snapshot = workload(estate, "dev-web-1")
    ok(estate.post("/workloads/dev-web-1/quarantine", {"level": "full", "reason": "ransomware"}))
    ok(
        estate.post("/workloads/dev-web-1/quarantine", {"level": "forensics"})
    )  # a level change keeps the snapshot
    [quarantined] = ok(estate.get("/workloads", selector="quarantine=true"))["items"]
    assert (quarantined["status"]["mode"], quarantined["status"]["modeFrom"]) == ("enforce", "quarantine")
    ok(estate.post("/workloads/dev-web-1/release", {"reason": "cleaned"}))
    after = workload(estate, "dev-web-1")
    assert after["metadata"] == snapshot["metadata"] != before["metadata"]
    assert after["spec"] == snapshot["spec"] and after["spec"]["mode"] == "alert"
    problem(estate.post("/workloads/dev-web-1/release"), 409)
    actions = [e["action"] for e in ok(estate.get("/audit", target="Workload/dev-web-1"))["items"]]
    assert actions[-3:] == ["quarantine", "quarantine-level", "release"]
    kinds = [(e["kind"], e["message"]) for e in ok(estate.get("/events", workload="dev-web-1"))["items"]]
    assert [k for k, _ in kinds] == ["quarantine", "quarantine-level", "release"]
    assert "dev-web-1 quarantined (full) by token:test-admin" in kinds[0][1] and "ransomware" in kinds[0][1]


def test_the_webhook_finds_the_workload_by_name_address_or_hostname(estate: Api) -> None:
    made = ok(hook(estate, {"address": "10.77.1.11", "level": "full", "reason": "beacon", "alert": "EDR-42"}))
    assert made == {"workload": "prod-web-1", "outcome": "quarantined", "level": "full"}
    assert ok(hook(estate, {"hostname": "prod-web-1", "level": "full"}))["outcome"] == "unchanged"
    assert ok(hook(estate, {"workload": "prod-web-1", "action": "release"}))["outcome"] == "released"
    [entry] = [
        e
        for e in ok(estate.get("/audit", target="Workload/prod-web-1"))["items"]
        if e["action"] == "quarantine"
    ]
    assert entry["actor"] == "hook:edr" and entry["details"]["reason"] == "beacon (alert EDR-42)"
    assert "quarantine" not in workload(estate, "prod-web-1")["metadata"].get("labels", {})
    assert (
        problem(hook(estate, {"address": "10.77.99.99"}), 404)["detail"]
        == "no workload holds address 10.77.99.99"
    )
    assert problem(hook(estate, {"address": "10.77.1.11", "hostname": "x"}), 422)["detail"].startswith(
        "name the"
    )
    problem(hook(estate, {"workload": "prod-web-1", "level": "half"}), 422)


def test_the_webhook_refuses_bad_stale_and_replayed_signatures(estate: Api) -> None:
    body = {"workload": "prod-db-1"}
    problem(hook(estate, body, secret="wrong"), 401)
    problem(hook(estate, body, name="siem"), 401)  # signed with another tool's secret
    problem(hook(estate, body, name="nobody"), 401)
    problem(hook(estate, body, at=time.time() - 3600), 401)
    problem(hook(estate, body, signature="sha256=00"), 401)
    assert "quarantine" not in workload(estate, "prod-db-1")["metadata"]["labels"]
    at = time.time()
    ok(hook(estate, body, at=at))
    assert "already used" in problem(hook(estate, body, at=at), 401)["detail"]
    problem(estate.as_("none").post("/hooks/quarantine", body), 401)


def test_without_hook_secrets_the_webhook_does_not_exist(database_url: str) -> None:
    from microseg.server import app as server_app
    from microseg.store import database
    from tests.server import running

    settings = make_settings(database_url)
    db = database.Database(settings.database)
    with running.serve(server_app.create_app(settings, db)) as url:
        import httpx

        assert httpx.post(url + "/api/v1/hooks/quarantine", json={}).status_code == 404
    db.dispose()


def test_a_tier_ordered_before_quarantine_is_refused_and_changes_nothing(estate: Api) -> None:
    """A tier tried before `quarantine` could allow what a quarantine isolates: the draft refuses it."""
    body = problem(estate.put("/tiers/early", {"apiVersion": "microseg.io/v1", "kind": "Tier",
                                               "metadata": {"name": "early"}, "spec": {"order": 50}}), 422)  # fmt: skip
    assert "quarantine is always evaluated first" in json.dumps(body), body
    assert estate.get("/tiers/early").status_code == 404


def test_a_quarantine_from_a_label_rule_shows_in_status_as_the_engine_enforces_it(estate: Api) -> None:
    """The engine enforces a `quarantine=true` a label rule adds; the workload's status must say so
    too (mode enforce, from quarantine), not the workload's own mode."""
    rule = {"priority": 10, "match": {"hostname": "dev-web-*"}, "labels": {"quarantine": "true"}}
    ok(estate.post("/labelrules", {"apiVersion": "microseg.io/v1", "kind": "LabelRule",
                                   "metadata": {"name": "isolate-dev-web"}, "spec": rule}), 201)  # fmt: skip
    items = ok(estate.get("/workloads", limit=1000))["items"]
    [status] = [w["status"] for w in items if w["metadata"]["name"] == "dev-web-1"]
    assert (status["mode"], status["modeFrom"], status["quarantined"]) == ("enforce", "quarantine", True)
    assert status["effectiveLabels"]["quarantine"] == "true"
    assert explain(estate, "dev-web-1", "dev-app-1", "8443/tcp")["rule"] == "quarantine/isolate-out"
