"""The administration verbs end to end against a real server on both backends: delete, draft
discard, get invariants, token list|revoke, agent list|revoke, exception create|list|approve
(four eyes), rollback --dry-run; and `token create` refusing a database that is not there."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from microseg.cli import main
from microseg.store import database, tokens
from tests.server.conftest import Api, ok, problem
from tests.server.estates import provision_example

runner = CliRunner()
RULE = "security/dev-never-reaches-prod"
SOON = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def cli(api: Api, *args: str, who: str = "admin") -> tuple[int, str]:
    base = ["--server", str(api.client.base_url), "--token", api.tokens.get(who, who)]
    result = runner.invoke(main.app, [*base, *args])
    return result.exit_code, result.output


def draft_changes(api: Api) -> dict[str, list[str]]:
    found: dict[str, list[str]] = ok(api.get("/draft/diff"))["objects"]
    return found


def test_delete_removes_a_rule_from_the_draft_only(api: Api) -> None:
    provision_example(api)
    code, out = cli(api, "delete", "rule", RULE)
    assert code == 0 and "from the draft" in out, out
    problem(api.get(f"/rules/{RULE}"), 404)
    assert draft_changes(api)["removed"] == [f"Rule/{RULE}"]
    assert any(
        d["metadata"]["name"] == "dev-never-reaches-prod" for d in ok(api.get("/versions/1"))["documents"]
    )
    code, out = cli(api, "delete", "rule", RULE)
    assert code == 2 and "404" in out
    code, out = cli(api, "delete", "versions", "1")
    assert code == 2 and "cannot delete" in out


def test_get_invariants_lists_them(api: Api) -> None:
    provision_example(api)
    code, out = cli(api, "get", "invariants", "-o", "json")
    assert code == 0, out
    assert {"dev-never-reaches-prod", "only-bastion-ssh"} <= {i["metadata"]["name"] for i in json.loads(out)}
    code, out = cli(api, "get", "invariant", "only-bastion-ssh")
    assert code == 0 and "only-bastion-ssh" in out


def test_draft_discard_makes_the_diff_empty(api: Api) -> None:
    provision_example(api)
    assert cli(api, "delete", "rule", RULE)[0] == 0
    code, out = cli(api, "draft", "discard", who="editor")
    assert code == 0 and f"Rule/{RULE} restored" in out, out
    assert draft_changes(api) == {"added": [], "removed": [], "changed": []}
    ok(api.get(f"/rules/{RULE}"))
    code, out = cli(api, "draft", "discard", who="viewer")
    assert code == 2 and "403" in out
    assert any(e["action"] == "revert-draft" for e in ok(api.get("/audit", target="draft"))["items"])


def test_rollback_dry_run_shows_the_change_and_changes_nothing(api: Api) -> None:
    provision_example(api)
    ok(api.delete(f"/rules/{RULE}"), 204)
    ok(api.post("/versions", {"note": "v2"}), 201)
    code, out = cli(api, "rollback", "v1", "--dry-run")
    assert code == 0 and f"Rule/{RULE} added" in out and "nothing changed" in out, out
    code, out = cli(api, "rollback", "1", "--dry-run", "-o", "json")
    assert code == 0 and json.loads(out)["objects"]["added"] == [f"Rule/{RULE}"]
    assert [v["name"] for v in ok(api.get("/versions"))["items"]] == ["v2", "v1"]
    problem(api.get(f"/rules/{RULE}"), 404)
    code, out = cli(api, "rollback", "9", "--dry-run")
    assert code == 2 and "no version 9" in out


def test_token_list_shows_owners_and_never_secrets(api: Api) -> None:
    code, out = cli(api, "token", "list", "-o", "json")
    assert code == 0, out
    listed = json.loads(out)
    assert {t["owner"] for t in listed} >= {"test-admin", "test-editor", "test-viewer"}
    code, out = cli(api, "token", "list")
    assert code == 0 and "test-viewer" in out
    assert not any(secret in out for secret in api.tokens.values()) and "msk_" not in out
    assert cli(api, "token", "list", who="editor")[0] == 2


def test_token_revoke_makes_the_token_401(api: Api) -> None:
    code, out = cli(api, "token", "list", "-o", "json")
    [viewer] = [t["id"] for t in json.loads(out) if t["name"] == "test-viewer"]
    assert cli(api, "token", "revoke", viewer, who="editor")[0] == 2
    ok(api.as_("viewer").get("/versions"))
    code, out = cli(api, "token", "revoke", viewer)
    assert code == 0 and viewer in out
    problem(api.as_("viewer").get("/versions"), 401)
    assert cli(api, "token", "revoke", viewer)[0] == 2


def test_agent_list_and_revoke(api: Api) -> None:
    made = ok(api.post("/enrollment-tokens", {"name": "web-9"}), 201)
    inventory = {"hostname": "web-9", "addresses": ["10.77.1.99"], "os": "linux"}
    credential = ok(
        api.as_("none").post("/agent/enroll", {"token": made["token"], "inventory": inventory}), 201
    )
    agent = api.as_(credential["credential"])
    ok(agent.post("/agent/heartbeat", inventory))
    code, out = cli(api, "agent", "list", "-o", "json", who="viewer")
    [listed] = json.loads(out)
    assert code == 0 and listed["workload"] == "web-9" and "credential" not in out
    code, out = cli(api, "agent", "list")
    assert code == 0 and listed["id"] in out and "web-9" in out
    assert cli(api, "agent", "revoke", listed["id"], who="editor")[0] == 2
    code, out = cli(api, "agent", "revoke", listed["id"])
    assert code == 0, out
    problem(agent.post("/agent/heartbeat", inventory), 401)


def test_exception_create_list_and_approve_need_another_person(api: Api) -> None:
    provision_example(api)
    request = ["exception", "create", "migration", "--owner", "dba", "--reason", "data migration",
               "--expires", SOON, "--from", "env=dev,role=web", "--to", "env=prod,role=db",
               "--service", "mysql", "--ticket", "CHG-7"]  # fmt: skip
    code, out = cli(api, *request)
    assert code == 0 and "requested" in out, out
    code, out = cli(api, "exception", "approve", "migration")
    assert code == 2 and "another user must approve it" in out
    code, out = cli(api, "exception", "list")
    assert code == 0 and "migration" in out and "not yet" in out
    with api.db.write() as conn:
        carol = tokens.create_api(conn, "carol-laptop", "editor", "cli:token-create", "carol")[1]
    code, out = cli(api, "exception", "approve", "migration", who=carol)
    assert code == 0 and "approved by token:carol-laptop(" in out, out
    [listed] = json.loads(cli(api, "exception", "list", "-o", "json")[1])
    assert listed["spec"]["approver"].endswith("@carol") and listed["spec"]["ticket"] == "CHG-7"
    code, out = cli(api, "exception", "create", "bad", "--owner", "x", "--reason", "y", "--expires", "soon",
                    "--from", "env=dev", "--to", "env=prod", "--service", "mysql")  # fmt: skip
    assert code == 2
    problem(api.get("/exceptions/bad"), 404)


def test_token_create_refuses_a_data_dir_without_a_database(tmp_path: Path) -> None:
    typo = tmp_path / "var-lib-microsge"
    result = runner.invoke(main.app, ["token", "create", "--role", "admin", "--data-dir", str(typo)])
    assert result.exit_code == 2 and str(typo / "microseg.db") in result.output and "--init" in result.output
    assert not typo.exists()
    made = runner.invoke(main.app, ["token", "create", "--role", "admin", "--data-dir", str(typo), "--init"])
    assert made.exit_code == 0 and made.output.startswith("msk_"), made.output
    again = runner.invoke(main.app, ["token", "create", "--role", "viewer", "--data-dir", str(typo)])
    assert again.exit_code == 0 and again.output.startswith("msk_"), again.output


def test_token_create_refuses_an_empty_database(database_url: str) -> None:
    result = runner.invoke(main.app, ["token", "create", "--role", "admin", "--database", database_url])
    assert result.exit_code == 2 and "no microseg database at" in result.output, result.output
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database and str(Path(url.database).resolve()) in result.output
        assert not Path(url.database).exists()
    else:
        assert "***" in result.output or url.password is None
        db = database.Database(database_url)
        with db.read() as conn:
            assert sa.inspect(conn).get_table_names() == []
        db.dispose()
    made = runner.invoke(
        main.app, ["token", "create", "--role", "admin", "--database", database_url, "--init"]
    )
    assert made.exit_code == 0 and made.output.startswith("msk_"), made.output
