"""`microseg template apply NAME --set ... --server URL --token T` against a real server: the
documents land in the draft (rules, services, invariants), a second apply is unchanged, and a
clash with the draft is the server's plain error (exit 2), with nothing applied."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from microseg import policyfile
from microseg.cli import loading, template
from microseg.policyfile import dumper
from microseg.store import database
from tests.server.conftest import Api, ok

runner = CliRunner()
app = typer.Typer()


@app.callback()
def root() -> None:
    """A stand-in for `microseg` (main.py wires the same sub-app)."""


app.add_typer(template.template_app)


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """The CLI speaks HTTP only; one backend is enough here."""
    yield database.sqlite_url(tmp_path / "data")


def apply(api: Api, name: str, *sets: str, who: str = "admin") -> tuple[int, str]:
    args = ["template", "apply", name, *(a for s in sets for a in ("--set", s))]
    args += ["--server", str(api.client.base_url), "--token", api.tokens[who]]
    result = runner.invoke(app, args)
    return result.exit_code, result.output


def test_templates_go_into_the_draft_next_to_the_example_estate(api: Api) -> None:
    estate_docs = dumper.documents(policyfile.load([loading.examples_dir()]))
    ok(api.post("/apply", json={"documents": estate_docs}))
    code, out = apply(api, "three-tier", "app=crm", "env=prod", "db_port=5432")
    assert code == 0, out
    assert "Rule/application/three-tier-crm-prod-app-to-db created" in out
    assert "Service/three-tier-crm-prod-db created" in out
    assert "`microseg diff`" in out and "`microseg provision -m NOTE`" in out
    code, out = apply(api, "env-separation")
    assert code == 0 and "Invariant/env-separation-dev-never-reaches-prod created" in out, out

    rules = {r["metadata"]["name"]: r["spec"] for r in ok(api.get("/rules", limit=1000))["items"]}
    db = rules["three-tier-crm-prod-app-to-db"]
    assert (db["tier"], db["priority"], db["action"]) == ("application", 2020, "allow")
    assert db["services"] == ["three-tier-crm-prod-db"]
    assert rules["env-separation-dev-to-prod"]["tier"] == "security"
    invariants = {i["metadata"]["name"] for i in ok(api.get("/invariants"))["items"]}
    assert {"dev-never-reaches-prod", "env-separation-dev-never-reaches-prod"} <= invariants
    added = ok(api.get("/draft/diff"))["objects"]["added"]
    assert "Rule/application/three-tier-crm-prod-web-to-app" in added

    code, out = apply(api, "three-tier", "app=crm", "env=prod", "db_port=5432")
    assert code == 0 and "0 created, 0 updated, 6 unchanged" in out, out  # 3 services, 3 rules


def test_json_result_and_a_clash_with_the_draft(api: Api) -> None:
    base = ["template", "apply", "risky-ports", "--set", "env=prod", "-o", "json"]
    base += ["--server", str(api.client.base_url), "--token", api.tokens["editor"]]
    result = runner.invoke(app, base)
    assert result.exit_code == 0, result.output
    assert "Rule/security/risky-ports-prod-smb" in json.loads(result.output)["created"]
    # An allow the draft holds at one of the priorities, on flows the template denies: the server
    # refuses (naming both rules) and applies none of it.
    jump = {"tier": "security", "priority": 2010, "action": "allow", "from": [{"selector": "role=jump"}],
            "to": [{"selector": "env=dev"}], "services": [{"port": 3389}]}  # fmt: skip
    ok(api.post("/rules", {"apiVersion": "microseg.io/v1", "kind": "Rule", "metadata": {"name": "jump-rdp"},
                           "spec": jump}), 201)  # fmt: skip
    code, out = apply(api, "risky-ports", "env=dev")
    assert code == 2 and "rule risky-ports-dev-rdp (deny) and rule jump-rdp (allow)" in " ".join(
        out.split()
    ), out
    names = {r["metadata"]["name"] for r in ok(api.get("/rules"))["items"]}
    assert not any(n.startswith("risky-ports-dev") for n in names)
    code, out = apply(api, "risky-ports", "env=dev", "priority=2100")
    assert code == 0, out


def test_a_viewer_cannot_apply_a_template(api: Api) -> None:
    code, out = apply(api, "risky-ports", "env=prod", who="viewer")
    assert code == 2 and "403" in out
