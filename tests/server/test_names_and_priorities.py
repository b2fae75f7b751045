"""One name grammar with the policy files: what `k8s import` writes is accepted, a name outside it
is a 422 naming the object; and equal priorities in the draft are refused only where the order of
two rules could change an outcome, naming both (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from microseg.cli.main import app
from microseg.model import names
from tests.server.conftest import Api, ok, problem
from tests.server.estates import doc, rule, workload

INVENTORY = Path(__file__).resolve().parents[2] / "src" / "microseg" / "examples" / "k8s"


def test_k8s_import_output_is_accepted_by_the_server(api: Api) -> None:
    result = CliRunner().invoke(app, ["k8s", "import", "-f", str(INVENTORY)])
    assert result.exit_code == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    applied = ok(api.post("/apply", {"documents": docs}))
    assert "Workload/crm-prod.web-7d9f-abcde" in applied["created"]
    found = ok(api.get("/workloads/crm-prod.web-7d9f-abcde"))
    assert found["spec"]["kind"] == "pod"


def test_a_name_outside_the_grammar_is_a_422_naming_the_object_and_nothing_is_stored(api: Api) -> None:
    docs = [workload("fine", "10.0.0.1", {}), workload("shop/web-1", "10.0.0.2", {})]
    body = problem(api.post("/apply", {"documents": docs}), 422)
    assert body["problems"] == [
        {"object": "Workload/shop/web-1", "field": "metadata.name",
         "message": f"name 'shop/web-1': {names.GRAMMAR} ('/' is not allowed: write 'namespace.pod' for a pod)"},
    ]  # fmt: skip
    assert "Workload 'shop/web-1'" in body["detail"]
    assert ok(api.get("/workloads"))["items"] == []


def test_one_bad_object_among_many_is_named_by_kind_and_name(api: Api) -> None:
    for bad, field in (({**doc("Service", "ok", {}), "kind": "Servce"}, "kind"),
                       (doc("Settings", "other", {}), "metadata.name"),
                       (doc("IPList", "a b", {"cidrs": ["10.0.0.0/8"]}), "metadata.name")):  # fmt: skip
        body = problem(api.post("/apply", {"documents": [bad]}), 422)
        (found,) = body["problems"]
        assert (found["object"], found["field"]) == (f"{bad['kind']}/{bad['metadata']['name']}", field)
    body = problem(api.post("/apply", {"documents": [{"apiVersion": "microseg.io/v1", "kind": "Service",
                                                        "metadata": "x"}]}), 422)  # fmt: skip
    assert body["problems"][0]["object"] == "Service"


DB = [{"port": 5432, "protocol": "tcp"}]


def test_equal_priorities_in_the_draft_are_fine_unless_the_order_can_change_an_outcome(api: Api) -> None:
    ok(api.post("/apply", {"documents": [rule("application", "web-to-db", 100, "role=web", "role=db", DB)]}))
    same_action = rule("application", "app-to-db", 100, "role=app", "role=db", DB)
    disjoint = rule("application", "no-dev-db", 100, "role=web", "role=db", [{"port": 3306}], action="deny")
    ok(api.post("/apply", {"documents": [same_action, disjoint]}))
    clash = rule("application", "no-prod-db", 100, "env=prod", "role=db", DB, action="deny")
    body = problem(api.put("/rules/application/no-prod-db", clash), 422)
    named = sorted((p["object"], p["message"].split(" both have")[0]) for p in body["problems"])
    assert named == [
        ("Rule/application/app-to-db", "rule app-to-db (allow) and rule no-prod-db (deny)"),
        ("Rule/application/no-prod-db", "rule no-prod-db (deny) and rule app-to-db (allow)"),
        ("Rule/application/no-prod-db", "rule no-prod-db (deny) and rule web-to-db (allow)"),
        ("Rule/application/web-to-db", "rule web-to-db (allow) and rule no-prod-db (deny)"),
    ]
    assert {p["field"] for p in body["problems"]} == {"spec.priority"}
    assert all("priority 100 in tier application and can match the same flow" in p["message"]
               for p in body["problems"])  # fmt: skip
    problem(api.get("/rules/application/no-prod-db"), 404)
