"""GitOps-grade apply (issue 16, items 8 and 10) against a real server on SQLite and PostgreSQL.

`POST /apply` with `applySet`: the objects an apply writes belong to that set; `prune` deletes the
set's objects the documents no longer hold and nothing else (not another set's, not one made
through the API); `dryRun` answers what would happen, with the draft diff, and writes nothing.
Workloads are merged, not replaced: a file owns the label keys, attributes and fields it declares,
agents own what they report, and what the set declared before and dropped is removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from microseg.cli import applysets, main
from microseg.server import config
from tests.server.conftest import Api, make_settings, ok, problem
from tests.server.estates import doc, rule, workload

WEB = doc("Service", "web", {"ports": [{"port": 443}]})
SSH = doc("Service", "ssh", {"ports": [{"port": 22}]})


@pytest.fixture
def settings(database_url: str) -> config.ServerSettings:
    return make_settings(database_url, enroll_per_minute=10_000)


def _apply(api: Api, docs: list[dict[str, Any]], status: int = 200, **more: Any) -> dict[str, Any]:
    body = {"documents": docs, **more}
    if status != 200:
        return problem(api.post("/apply", body), status)
    found: dict[str, Any] = ok(api.post("/apply", body))
    return found


def _names(api: Api, path: str) -> set[str]:
    items = ok(api.get(path, limit=10_000))["items"]
    return {f"{i['spec']['tier']}/{i['metadata']['name']}" if path == "/rules" else i["metadata"]["name"]
            for i in items}  # fmt: skip


def _audit_count(api: Api) -> int:
    return len(ok(api.get("/audit", limit=10_000))["items"])


def _snapshot(api: Api) -> tuple[Any, ...]:
    """Everything an apply may change: the draft, the inventory, the audit log."""
    return ok(api.get("/draft")), ok(api.get("/workloads", limit=10_000))["items"], _audit_count(api)


def _set_a() -> list[dict[str, Any]]:
    return [
        WEB,
        SSH,
        rule("application", "lb-to-web", 100, "role=lb", "role=web", ["web"]),
        rule("application", "admin-ssh", 110, "role=admin", "role=web", ["ssh"]),
        workload("web-1", "10.9.0.1", {"role": "web"}),
    ]


# --- prune ----------------------------------------------------------------------------------------


def test_prune_deletes_what_the_set_no_longer_holds_and_nothing_else(api: Api) -> None:
    _apply(api, _set_a(), applySet="team-a")
    _apply(api, [rule("application", "b-only", 300, "role=b", "role=web", "any")], applySet="team-b")
    ok(api.post("/rules", rule("application", "console-made", 400, "role=c", "role=web", ["ssh"])), 201)
    ok(api.post("/workloads", workload("api-made", "10.9.0.9", {"role": "lb"})), 201)
    kept = [WEB, SSH, rule("application", "lb-to-web", 100, "role=lb", "role=web", ["web"])]
    result = _apply(api, kept, applySet="team-a", prune=True)
    assert sorted(result["pruned"]) == ["Rule/application/admin-ssh", "Workload/web-1"]
    assert _names(api, "/rules") == {
        "application/lb-to-web",
        "application/b-only",
        "application/console-made",
    }
    assert _names(api, "/workloads") == {"api-made"}
    record = ok(api.get("/audit", target="Rule/application/admin-ssh"))["items"]
    assert {r["action"] for r in record} == {"create", "delete"}
    assert any(r["details"].get("pruned") and r["details"]["applySet"] == "team-a" for r in record)


def test_prune_never_deletes_an_object_made_through_the_api_under_a_name_the_set_once_had(api: Api) -> None:
    _apply(api, [WEB, rule("application", "x", 100, "role=lb", "role=web", ["web"])], applySet="team-a")
    ok(api.delete("/rules/application/x"), 204)
    ok(api.post("/rules", rule("application", "x", 100, "role=lb", "role=web", ["web"])), 201)
    result = _apply(api, [WEB], applySet="team-a", prune=True)
    assert result["pruned"] == []
    ok(api.get("/rules/application/x"))


def test_a_discarded_draft_leaves_no_membership_that_reaches_an_object_made_again(api: Api) -> None:
    _apply(api, [WEB, rule("application", "x", 100, "role=lb", "role=web", ["web"])], applySet="team-a")
    ok(api.post("/versions", {"note": "v1"}), 201)
    _apply(api, [WEB, SSH], applySet="team-a")
    ok(api.delete("/draft"))
    assert _names(api, "/services") == {"web"}
    taken = _apply(api, [SSH], applySet="team-b")  # made anew: team-a's membership was of a gone object
    assert taken["created"] == ["Service/ssh"] and taken["adopted"] == {}, taken
    result = _apply(api, [WEB, rule("application", "x", 100, "role=lb", "role=web", ["web"])],
                    applySet="team-a", prune=True)  # fmt: skip
    assert result["pruned"] == []
    assert _names(api, "/services") == {"web", "ssh"}


def test_prune_without_a_set_is_refused_and_a_bad_set_name_too(api: Api) -> None:
    _apply(api, _set_a(), applySet="team-a")
    before = _snapshot(api)
    body = _apply(api, [WEB], 422, prune=True)
    assert "applySet" in str(body)
    _apply(api, [WEB], 422, applySet="../etc passwd", prune=True)
    _apply(api, [WEB], 422, applySet="x" * 201, prune=True)
    assert _snapshot(api) == before


def test_a_prune_that_would_break_a_reference_is_refused_whole(api: Api) -> None:
    _apply(api, [WEB], applySet="team-a")
    ok(api.post("/rules", rule("application", "uses-web", 100, "role=lb", "role=web", ["web"])), 201)
    before = _snapshot(api)
    body = _apply(api, [SSH], 422, applySet="team-a", prune=True)
    assert body["problems"][0]["object"] == "Rule/application/uses-web"
    assert _snapshot(api) == before


def test_a_set_that_applies_another_sets_object_takes_it_over_and_the_first_cannot_prune_it(
    api: Api,
) -> None:
    _apply(api, [WEB, SSH], applySet="team-a")
    taken = _apply(api, [SSH], applySet="team-b")
    assert taken["adopted"] == {"Service/ssh": "team-a"} and taken["unchanged"] == ["Service/ssh"]
    adopted = [r for r in ok(api.get("/audit", target="Service/ssh"))["items"] if r["action"] == "adopt"]
    assert [r["details"] for r in adopted] == [{"applySet": "team-b", "from": "team-a"}]
    result = _apply(api, [WEB], applySet="team-a", prune=True)
    assert result["pruned"] == []
    assert _names(api, "/services") == {"web", "ssh"}


def test_pruning_a_workload_with_a_live_agent_needs_an_admin_also_in_a_dry_run(api: Api) -> None:
    _apply(api, [workload("db-1", "10.9.0.5", {"role": "db"})], applySet="hosts")
    _enroll(api, "db-1", "10.9.0.5")
    before = _snapshot(api)
    editor = api.as_("editor")
    problem(editor.post("/apply", {"documents": [], "applySet": "hosts", "prune": True, "dryRun": True}), 403)
    problem(editor.post("/apply", {"documents": [], "applySet": "hosts", "prune": True}), 403)
    assert _snapshot(api) == before
    assert ok(api.get("/agents"))["items"][0]["state"] != "revoked"


def test_a_viewer_can_neither_apply_nor_dry_run(api: Api) -> None:
    viewer = api.as_("viewer")
    problem(viewer.post("/apply", {"documents": [WEB], "applySet": "a", "dryRun": True}), 403)
    problem(viewer.post("/apply", {"documents": [WEB], "applySet": "a"}), 403)
    assert _names(api, "/services") == set()


# --- dry run --------------------------------------------------------------------------------------


def test_a_dry_run_answers_the_changes_and_the_draft_diff_and_writes_nothing(api: Api) -> None:
    _apply(api, _set_a(), applySet="team-a")
    ok(api.post("/versions", {"note": "v1"}), 201)
    before = _snapshot(api)
    changed = rule("application", "lb-to-web", 100, "role=lb", "role=web", ["web", "ssh"])
    result = _apply(api, [WEB, SSH, changed], applySet="team-a", prune=True, dryRun=True)
    assert result["dryRun"] is True
    assert result["updated"] == ["Rule/application/lb-to-web"]
    assert sorted(result["pruned"]) == ["Rule/application/admin-ssh", "Workload/web-1"]
    objects = result["diff"]["objects"]
    assert objects["removed"] == ["Rule/application/admin-ssh"]
    assert objects["changed"] == ["Rule/application/lb-to-web"]
    assert _snapshot(api) == before
    assert ok(api.get("/draft/diff"))["objects"] == {"added": [], "removed": [], "changed": []}
    real = _apply(api, [WEB, SSH, changed], applySet="team-a", prune=True)
    assert ok(api.get("/draft/diff"))["objects"] == objects
    assert {k: real[k] for k in ("updated", "pruned")} == {k: result[k] for k in ("updated", "pruned")}


def test_an_invalid_dry_run_is_a_422_and_writes_nothing(api: Api) -> None:
    _apply(api, _set_a(), applySet="team-a")
    before = _snapshot(api)
    bad = rule("application", "typo", 200, "role=lb", "role=web", ["wbe"])
    body = _apply(api, [*_set_a(), bad], 422, applySet="team-a", prune=True, dryRun=True)
    assert body["problems"][0]["object"] == "Rule/application/typo"
    _apply(api, [{"kind": "Nope"}], 422, applySet="team-a", dryRun=True)
    assert _snapshot(api) == before


# --- field ownership --------------------------------------------------------------------------------


def _enroll(api: Api, name: str, address: str, **inventory: Any) -> Api:
    """An agent enrolling onto `name` (bound token), reporting hostname, os and kernel."""
    made = ok(
        api.post("/enrollment-tokens", {"name": name, "labels": {"zone": "z1"}, "workloads": [name]}), 201
    )
    inv = {"hostname": name, "addresses": [address], "os": "linux", "kernel": "6.1", "kind": "host",
           **inventory}  # fmt: skip
    answer = ok(api.as_("none").post("/agent/enroll", {"token": made["token"], "inventory": inv}), 201)
    return api.as_(answer["credential"])


def test_re_applying_a_workload_keeps_what_its_agent_and_the_api_gave_it(api: Api) -> None:
    files = [workload("db-1", "10.9.0.5", {"role": "db", "env": "prod"})]
    _apply(api, files, applySet="hosts")
    agent = _enroll(api, "db-1", "10.9.0.5")
    ok(agent.post("/agent/heartbeat", {"hostname": "db-1", "addresses": ["10.9.0.5", "10.9.0.6"],
                                       "os": "linux", "kernel": "6.2", "kind": "host"}))  # fmt: skip
    ok(api.post("/labels/bulk", {"workloads": ["db-1"], "add": {"owner": "dba"}}))
    reported = ok(api.get("/workloads/db-1"))["spec"]
    assert reported["attributes"] == {"hostname": "db-1", "kernel": "6.2", "os": "linux"}
    result = _apply(api, files, applySet="hosts")
    assert result["unchanged"] == ["Workload/db-1"], result
    stored = ok(api.get("/workloads/db-1"))
    assert stored["spec"] == reported
    assert stored["metadata"]["labels"] == {"role": "db", "env": "prod", "zone": "z1", "owner": "dba"}


def test_a_label_the_set_declared_and_dropped_goes_one_it_never_declared_stays(api: Api) -> None:
    _apply(
        api, [workload("db-1", "10.9.0.5", {"role": "db", "env": "prod"}, mode="enforce")], applySet="hosts"
    )
    ok(api.post("/labels/bulk", {"workloads": ["db-1"], "add": {"owner": "dba"}}))
    result = _apply(api, [workload("db-1", "10.9.0.5", {"role": "db"})], applySet="hosts")
    assert result["updated"] == ["Workload/db-1"]
    stored = ok(api.get("/workloads/db-1"))
    assert stored["metadata"]["labels"] == {"role": "db", "owner": "dba"}
    listed = ok(api.get("/workloads"))["items"][0]
    assert "mode" not in stored["spec"] and listed["status"]["mode"] == "visibility"
    # another set applying the same workload removes nothing the first set declared
    _apply(api, [workload("db-1", "10.9.0.5", {"tier": "gold"})], applySet="other")
    assert ok(api.get("/workloads/db-1"))["metadata"]["labels"] == {
        "role": "db",
        "owner": "dba",
        "tier": "gold",
    }


def test_a_mode_set_through_the_api_survives_files_that_never_declared_one(api: Api) -> None:
    files = [workload("db-1", "10.9.0.5", {"role": "db"})]
    _apply(api, files, applySet="hosts")
    ok(api.put("/workloads/db-1/mode", {"mode": "alert"}))
    _apply(api, files, applySet="hosts")
    assert ok(api.get("/workloads/db-1"))["spec"]["mode"] == "alert"


def test_re_applying_does_not_release_a_quarantine(api: Api) -> None:
    files = [workload("db-1", "10.9.0.5", {"role": "db"})]
    _apply(api, files, applySet="hosts")
    ok(api.post("/workloads/db-1/quarantine", {"level": "full", "reason": "incident"}))
    _apply(api, files, applySet="hosts")
    assert ok(api.get("/workloads/db-1"))["metadata"]["labels"]["quarantine"] == "full"


def test_a_file_cannot_overwrite_or_relabel_as_its_own_what_an_agent_reported(api: Api) -> None:
    """An export committed to git (`get workloads -o yaml`) re-applied: the agent's hostname stays
    the agent's word, so a label rule that trusts only operators still does not believe it."""
    ok(
        api.post(
            "/labelrules",
            doc("LabelRule", "dbs", {"match": {"hostname": "*-db-*"}, "labels": {"role": "db"}}),
        ),
        201,
    )
    _apply(api, [workload("h1", "10.9.0.7", {"env": "dev"})], applySet="hosts")
    agent = _enroll(api, "h1", "10.9.0.7")
    ok(agent.post("/agent/heartbeat", {"hostname": "h1-db-1", "addresses": ["10.9.0.7"], "os": "linux"}))
    laundered = workload("h1", "10.9.0.7", {"env": "dev"}, attributes={"hostname": "h1-db-1", "os": "linux"},
                         attributeSources={"hostname": "operator"})  # fmt: skip
    _apply(api, [laundered], applySet="hosts")
    spec = ok(api.get("/workloads/h1"))["spec"]
    assert spec["attributeSources"]["hostname"] == "agent"
    assert ok(api.get("/workloads", selector="role=db"))["items"] == []
    forged = workload("h1", "10.9.0.7", {"env": "dev"}, attributes={"hostname": "prod-db-9"})
    result = _apply(api, [forged], applySet="hosts")
    assert result["conflicts"] == [{"object": "Workload/h1", "field": "spec.attributes.hostname",
                                    "message": result["conflicts"][0]["message"]}]  # fmt: skip
    assert "h1-db-1" in result["conflicts"][0]["message"]
    assert ok(api.get("/workloads/h1"))["spec"]["attributes"]["hostname"] == "h1-db-1"


def test_an_operator_attribute_the_set_dropped_goes_and_the_kind_stays_the_agents(api: Api) -> None:
    files = [workload("dev-1", "10.9.0.8", {}, attributes={"rack": "r7", "owner": "x"})]
    _apply(api, files, applySet="hosts")
    _enroll(api, "dev-1", "10.9.0.8")
    _apply(api, [workload("dev-1", "10.9.0.8", {}, attributes={"rack": "r8"})], applySet="hosts")
    spec = ok(api.get("/workloads/dev-1"))["spec"]
    assert spec["attributes"] == {"hostname": "dev-1", "kernel": "6.1", "os": "linux", "rack": "r8"}
    assert spec["kind"] == "host"  # the agent's; the file's `vm` is the default it did not choose


def test_without_an_agent_the_files_addresses_replace_the_stored_ones(api: Api) -> None:
    _apply(api, [workload("printer", "10.9.0.20", {})], applySet="hosts")
    _apply(api, [workload("printer", "10.9.0.21", {})], applySet="hosts")
    assert ok(api.get("/workloads/printer"))["spec"]["addresses"] == ["10.9.0.21"]


# --- the CLI ----------------------------------------------------------------------------------------


def _cli(api: Api, *args: str, who: str = "admin") -> tuple[int, str]:
    base = ["--server", str(api.client.base_url), "--token", api.tokens[who]]
    result = CliRunner().invoke(main.app, [*base, *args])
    return result.exit_code, result.output


def _write(path: Path, docs: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def test_the_cli_prunes_only_its_own_paths_set_and_dry_runs(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "prod" / "all.yaml", [WEB, workload("prod-1", "10.9.1.1", {"env": "prod"})])
    _write(tmp_path / "dev" / "all.yaml", [SSH, workload("dev-1", "10.9.2.1", {"env": "dev"})])
    for tree in ("prod", "dev"):
        code, out = _cli(api, "apply", "-f", tree)
        assert code == 0 and f"apply set files:{tree}" in out, out
    _write(tmp_path / "prod" / "all.yaml", [WEB])
    code, out = _cli(api, "apply", "-f", "prod", "--prune", "--dry-run")
    assert (
        code == 0 and "Workload/prod-1 would be deleted (pruned)" in out and "dry run: nothing changed" in out
    )
    assert _names(api, "/workloads") == {"prod-1", "dev-1"}
    code, out = _cli(api, "apply", "-f", "prod", "--prune", "-o", "json")
    assert code == 0 and '"pruned": [\n    "Workload/prod-1"' in out, out
    assert _names(api, "/workloads") == {"dev-1"}
    assert _names(api, "/services") == {"web", "ssh"}


def test_the_cli_names_a_set_with_set_and_refuses_a_bad_one(api: Api, tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", [WEB])
    code, out = _cli(api, "apply", "-f", str(tmp_path / "a.yaml"), "--set", "team a")
    assert code == 2 and "apply set" in out
    assert _names(api, "/services") == set()
    code, out = _cli(api, "apply", "-f", str(tmp_path / "a.yaml"), "--set", "team-a")
    assert code == 0 and "apply set team-a" in out
    _write(tmp_path / "b.yaml", [SSH])
    code, out = _cli(api, "apply", "-f", str(tmp_path / "b.yaml"), "--set", "team-a", "--prune")
    assert code == 0 and "Service/web deleted (pruned)" in out, out
    code, out = _cli(api, "apply", "-f", str(tmp_path / "b.yaml"), "--set", "team-b", "--prune", who="viewer")
    assert code == 2 and "403" in out


def test_a_default_set_name_is_the_relative_paths_or_their_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert applysets.default_name([Path("b"), Path("./a/"), Path("b")]) == "files:a,b"
    assert applysets.default_name([tmp_path / "prod"]) == "files:prod"
    outside = applysets.default_name([Path("/srv/policies")])
    assert outside == "files:/srv/policies"
    odd = applysets.default_name([Path("my policies")])
    assert (
        odd.startswith("files:") and " " not in odd and odd == applysets.default_name([Path("my policies")])
    )
    assert len(applysets.default_name([Path("x" * 300)])) <= 200
