"""Issue 15 §2 against a real server: an agent's own word about its hostname buys no labels.

The attack: an env=dev agent (one stolen credential, or the reusable enrollment token) reports the
hostname `h1-db-1` in a heartbeat; a hostname label rule (`*-db-*` -> role=db) made it a database,
so the dev app servers' "app -> db" rule reached it. Attributes now carry their source
(`spec.attributeSources`, written by the agent routes), and a label rule believes the agent only
when it says so (`spec.trust`).
"""

from __future__ import annotations

from typing import Any

from tests.server.conftest import Api, ok, problem
from tests.server.estates import doc, provision_example, workload

GLOB_RULE = "db-by-glob"
DEV_APP_TO_DB = "application/dev-app-to-db"


def _label_rule(**more: Any) -> dict[str, Any]:
    return doc("LabelRule", GLOB_RULE, {"match": {"hostname": "*-db-*"}, "labels": {"role": "db"}, **more})


def _enroll_dev_agent(api: Api) -> Api:
    """An agent enrolled with a dev token as `h1`, then reporting the hostname `h1-db-1`."""
    token = ok(api.post("/enrollment-tokens", {"name": "dev", "labels": {"env": "dev", "app": "crm"}}), 201)
    inventory = {"hostname": "h1", "addresses": ["10.77.2.50"], "os": "linux"}
    enrolled = ok(
        api.as_("none").post("/agent/enroll", {"token": token["token"], "inventory": inventory}), 201
    )
    agent = api.as_(enrolled["credential"])
    ok(agent.post("/agent/heartbeat", {**inventory, "hostname": "h1-db-1"}))
    return agent


def _effective(api: Api, name: str) -> dict[str, str]:
    items = ok(api.get("/workloads", limit=10_000))["items"]
    found: dict[str, str] = next(
        w["status"]["effectiveLabels"] for w in items if w["metadata"]["name"] == name
    )
    return found


def _mysql_from_dev_app(api: Api) -> dict[str, Any]:
    answer = ok(
        api.post("/explain", {"from": "dev-app-1", "to": "h1", "port": "3306/tcp", "process": "mysqld"})
    )
    verdict: dict[str, Any] = answer["verdict"]
    return verdict


def test_an_agent_reported_hostname_gains_no_role_from_a_hostname_label_rule(api: Api) -> None:
    provision_example(api)
    ok(api.post("/labelrules", _label_rule()), 201)
    _enroll_dev_agent(api)
    stored = ok(api.get("/workloads/h1"))
    assert stored["spec"]["attributes"]["hostname"] == "h1-db-1"
    assert stored["spec"]["attributeSources"]["hostname"] == "agent"
    assert _effective(api, "h1") == {"env": "dev", "app": "crm"}
    dbs = [w["metadata"]["name"] for w in ok(api.get("/workloads", selector="role=db"))["items"]]
    assert "h1" not in dbs and "dev-db-1" in dbs  # the operator-declared database keeps its role
    verdict = _mysql_from_dev_app(api)
    assert verdict["decision"] == "deny" and verdict["rule"] != DEV_APP_TO_DB


def test_a_label_rule_that_trusts_the_agent_applies(api: Api) -> None:
    """The explicit opt-in: the same report now labels, in the listing and the compiled engine."""
    provision_example(api)
    ok(api.post("/labelrules", _label_rule()), 201)
    _enroll_dev_agent(api)
    assert "role" not in _effective(api, "h1")
    ok(api.put(f"/labelrules/{GLOB_RULE}", _label_rule(trust=["agent"])))
    assert _effective(api, "h1")["role"] == "db"
    assert _mysql_from_dev_app(api)["rule"] == DEV_APP_TO_DB


def test_an_operator_declared_hostname_is_still_believed(api: Api) -> None:
    provision_example(api)
    ok(api.post("/labelrules", _label_rule()), 201)
    spec = {"attributes": {"hostname": "h2-db-1"}}
    ok(api.post("/workloads", workload("h2", "10.77.2.51", {"env": "dev", "app": "crm"}, **spec)), 201)
    assert _effective(api, "h2")["role"] == "db"
    marked = workload(
        "h2", "10.77.2.51", {"env": "dev", "app": "crm"}, **spec, attributeSources={"hostname": "agent"}
    )
    assert ok(api.put("/workloads/h2", marked))["spec"]["attributeSources"] == {"hostname": "agent"}
    assert "role" not in _effective(api, "h2")


def test_unknown_sources_and_trust_are_refused_and_change_nothing(api: Api) -> None:
    body = problem(api.post("/labelrules", _label_rule(trust=["operator", "root"])), 422)
    assert body["problems"][0]["object"] == f"LabelRule/{GLOB_RULE}"
    assert body["problems"][0]["field"] == "spec.trust[1]"
    problem(api.get(f"/labelrules/{GLOB_RULE}"), 404)
    problem(api.post("/labelrules", _label_rule(trust=[])), 422)
    bad = workload(
        "h3", "10.77.2.52", {}, attributes={"hostname": "h3"}, attributeSources={"hostname": "kernel"}
    )
    body = problem(api.post("/workloads", bad), 422)
    assert body["problems"][0]["field"] == "spec.attributeSources.hostname"
    problem(api.get("/workloads/h3"), 404)
    assert ok(api.get("/audit"))["items"] == []
