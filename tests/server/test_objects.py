"""Objects through the API: apply, list with selectors and paging, ETags, and bad input that
gets a problem+json 4xx naming the object and field, and changes nothing."""

from __future__ import annotations

from tests.server.conftest import Api, ok, problem
from tests.server.estates import doc, example, rule, workload


def _apply_example(api: Api) -> dict[str, list[str]]:
    result: dict[str, list[str]] = ok(api.post("/apply", {"documents": example()}))
    return result


def test_applying_the_example_estate_creates_every_object_once(api: Api) -> None:
    first = _apply_example(api)
    assert len(first["created"]) > 40 and not first["updated"]
    assert "Rule/security/dev-never-reaches-prod" in first["created"]
    again = _apply_example(api)
    assert not again["created"] and not again["updated"] and len(again["unchanged"]) == len(first["created"])


def test_workloads_filter_by_effective_labels_and_page(api: Api) -> None:
    _apply_example(api)
    prod_db = ok(api.get("/workloads", selector="env=prod,role=db"))["items"]
    assert [w["metadata"]["name"] for w in prod_db] == ["prod-db-1"]  # role=db comes from a label rule
    assert prod_db[0]["status"]["effectiveLabels"]["role"] == "db"
    names, token = [], None
    while True:
        page = ok(api.get("/workloads", limit=3, **({"continue_": token} if token else {})))
        names += [w["metadata"]["name"] for w in page["items"]]
        token = page["continue"]
        if token is None:
            break
    every = [w["metadata"]["name"] for w in ok(api.get("/workloads"))["items"]]
    assert names == every == sorted(every) and len(every) > 10
    problem(api.get("/workloads", selector="env in (prod"), 422)


def test_a_rule_naming_an_unknown_service_is_refused_with_object_and_field(api: Api) -> None:
    _apply_example(api)
    before = ok(api.get("/draft"))
    bad = rule("application", "web-to-cache", 777, "role=web", "role=cache", ["redis-typo"])
    body = problem(api.put("/rules/application/web-to-cache", bad), 422)
    assert body["problems"][0]["object"] == "Rule/application/web-to-cache"
    assert body["problems"][0]["field"] == "spec.services[0]"
    assert "unknown service 'redis-typo'" in body["problems"][0]["message"]
    problem(api.get("/rules/application/web-to-cache"), 404)
    assert ok(api.get("/draft")) == before


def test_one_bad_document_in_an_apply_applies_nothing(api: Api) -> None:
    docs = [workload("w1", "10.0.0.1", {"env": "prod"}), workload("w2", "10.0.0.2", {"env": "prod"}),
            doc("Service", "db", {"ports": [{"port": 70000}]})]  # fmt: skip
    body = problem(api.post("/apply", {"documents": docs}), 422)
    assert body["problems"][0]["object"] == "Service/db"
    assert ok(api.get("/workloads"))["items"] == []
    assert ok(api.get("/audit"))["items"] == []


def test_a_priority_tie_is_refused_only_where_the_order_can_change_an_outcome(api: Api) -> None:
    ok(api.post("/rules", rule("application", "a", 100, "role=web", "role=db", "any")), 201)
    ok(api.post("/rules", rule("application", "b", 100, "role=app", "role=db", "any")), 201)
    body = problem(
        api.post("/rules", rule("application", "c", 100, "role=app", "role=db", "any", "deny")), 422
    )
    assert sorted((p["object"], p["message"].split(" both")[0]) for p in body["problems"]) == [
        ("Rule/application/b", "rule b (allow) and rule c (deny)"),
        ("Rule/application/c", "rule c (deny) and rule b (allow)"),
    ]


def test_overlapping_workload_addresses_are_refused(api: Api) -> None:
    ok(api.post("/workloads", workload("w1", "10.0.0.1", {})), 201)
    body = problem(api.post("/workloads", workload("w2", "10.0.0.1", {})), 422)
    assert "overlaps workload w1" in body["problems"][0]["message"]
    net = doc("Workload", "lab", {"kind": "unmanaged", "addresses": ["10.0.0.0/24"]})
    problem(api.post("/workloads", net), 422)


def test_deleting_a_service_a_rule_uses_is_refused(api: Api) -> None:
    ok(api.post("/services", doc("Service", "web", {"ports": [{"port": 443}]})), 201)
    ok(api.post("/rules", rule("application", "to-web", 100, "role=lb", "role=web", ["web"])), 201)
    body = problem(api.delete("/services/web"), 422)
    assert body["problems"][0]["object"] == "Rule/application/to-web"
    ok(api.get("/services/web"))
    ok(api.delete("/rules/application/to-web"), 204)
    ok(api.delete("/services/web"), 204)
    problem(api.delete("/services/web"), 404)


def test_etags_and_if_match_protect_against_lost_updates(api: Api) -> None:
    svc = doc("Service", "web", {"ports": [{"port": 443}]})
    created = api.post("/services", svc)
    etag = created.headers["etag"]
    problem(api.post("/services", svc), 409)
    assert api.get("/services/web").headers["etag"] == etag
    changed = doc("Service", "web", {"ports": [{"port": 8443}]})
    problem(api.put("/services/web", changed, headers={"If-Match": '"not-the-etag"'}), 412)
    assert ok(api.get("/services/web"))["spec"]["ports"] == [{"port": 443}]
    updated = api.put("/services/web", changed, headers={"If-Match": etag})
    ok(updated)
    assert updated.headers["etag"] != etag
    problem(api.put("/services/web", svc, headers={"If-Match": etag}), 412)  # the old ETag is stale now
    problem(api.put("/services/web", svc, headers={"If-None-Match": "*"}), 412)
    problem(api.delete("/services/web", headers={"If-Match": etag}), 412)
    ok(api.delete("/services/web", headers={"If-Match": updated.headers["etag"]}), 204)


def test_the_url_and_the_document_must_agree(api: Api) -> None:
    svc = doc("Service", "web", {"ports": [{"port": 443}]})
    problem(api.put("/services/other", svc), 422)
    problem(api.put("/iplists/web", svc), 422)
    problem(api.post("/services", {**svc, "apiVersion": "v2"}), 422)
    problem(api.post("/services", {**svc, "metadata": {"name": "bad name/"}}), 422)
    problem(api.post("/settings", doc("Settings", "other", {})), 422)
    problem(api.post("/services", {**svc, "surprise": 1}), 422)


def test_unknown_spec_fields_get_a_suggestion(api: Api) -> None:
    body = problem(api.post("/services", doc("Service", "web", {"prots": [{"port": 443}]})), 422)
    messages = " ".join(p["message"] for p in body["problems"])
    assert "did you mean 'ports'" in messages


def test_bulk_labels_and_the_labels_in_use(api: Api) -> None:
    _apply_example(api)
    changed = ok(api.post("/labels/bulk", {"selector": "env=dev", "add": {"team": "crm"}, "remove": ["app"]}))
    assert changed["changed"] and all(n.startswith("dev-") for n in changed["changed"])
    devs = ok(api.get("/workloads", selector="env=dev"))["items"]
    assert all(
        w["metadata"]["labels"]["team"] == "crm" and "app" not in w["metadata"]["labels"] for w in devs
    )
    assert "crm" in ok(api.get("/labels"))["team"]
    problem(api.post("/labels/bulk", {"selector": "env=dev", "add": {"bad key!": "x"}}), 422)
    problem(api.post("/labels/bulk", {"workloads": ["nope"], "add": {"a": "b"}}), 404)
    problem(api.post("/labels/bulk", {"add": {"a": "b"}}), 422)


def test_every_change_is_audited_with_who_and_the_diff(api: Api) -> None:
    ok(api.as_("editor").post("/services", doc("Service", "web", {"ports": [{"port": 443}]})), 201)
    ok(api.as_("editor").put("/services/web", doc("Service", "web", {"ports": [{"port": 80}]})))
    ok(api.as_("editor").delete("/services/web"), 204)
    records = ok(api.get("/audit", target="Service/"))["items"]
    assert [r["action"] for r in records] == ["create", "update", "delete"]
    assert all(r["actor"].startswith("token:test-editor") for r in records)
    assert records[1]["details"]["before"]["spec"]["ports"] == [{"port": 443}]
    assert records[1]["details"]["after"]["spec"]["ports"] == [{"port": 80}]


def test_oversized_bodies_get_413(api: Api) -> None:
    huge = {"documents": [workload(f"w{i}", "10.0.0.1", {"pad": "x" * 60}) for i in range(80_000)]}
    problem(api.post("/apply", huge), 413)
