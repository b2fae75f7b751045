"""`microseg --server URL --token T ...` against a real server: kubectl-like tables, -o json|yaml,
file:line errors before anything is sent, and the config file `microseg login` writes."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from microseg.cli import loading, main
from microseg.store import database
from tests.server.conftest import Api

runner = CliRunner()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """The CLI speaks HTTP only; one backend is enough here (the API suite runs both)."""
    yield database.sqlite_url(tmp_path / "data")


def cli(api: Api, *args: str, who: str = "admin") -> tuple[int, str]:
    base = ["--server", str(api.client.base_url), "--token", api.tokens[who]]
    result = runner.invoke(main.app, [*base, *args])
    return result.exit_code, result.output


def test_apply_diff_provision_get_and_rollback(api: Api) -> None:
    code, out = cli(api, "apply", "-f", str(loading.examples_dir()))
    assert code == 0, out
    assert "created" in out and "0 updated" in out
    code, out = cli(api, "diff")
    assert code == 0 and "Rule/security/dev-never-reaches-prod added" in out
    code, out = cli(api, "provision", "-m", "first version")
    assert code == 0 and "provisioned v1" in out, out
    code, out = cli(api, "get", "workloads", "-l", "env=prod,role=db")
    assert code == 0 and "prod-db-1" in out and "prod-web-1" not in out
    code, out = cli(api, "get", "workloads", "-l", "env=dev", "-o", "json")
    names = {w["metadata"]["name"] for w in json.loads(out)}
    assert code == 0 and names and all(n.startswith("dev-") for n in names)
    code, out = cli(api, "get", "rule", "security/dev-never-reaches-prod", "-o", "yaml")
    assert code == 0 and yaml.safe_load(out)["spec"]["action"] == "deny"
    code, out = cli(api, "provision", "-m", "again")
    assert code == 2 and "Nothing to provision" in out
    code, out = cli(api, "quarantine", "prod-db-1")
    assert code == 0 and "quarantined" in out
    code, out = cli(api, "release", "prod-db-1")
    assert code == 0
    code, out = cli(api, "rollback", "1", "-m", "same again")
    assert code == 2 and "Nothing to provision" in out
    code, out = cli(api, "get", "versions")
    assert code == 0 and "v1" in out and "first version" in out
    code, out = cli(api, "audit", "--target", "Workload/prod-db-1", "-o", "json")
    assert [r["action"] for r in json.loads(out)] == ["release", "quarantine", "create"]  # newest first
    code, out = cli(api, "events")
    assert code == 0


def test_bad_files_are_reported_with_file_and_line_and_nothing_is_sent(api: Api, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: microseg.io/v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 0}]}\n"
    )
    code, out = cli(api, "apply", "-f", str(bad))
    assert code == 2 and "bad.yaml:4" in out
    assert api.get("/services").json()["items"] == []


def test_server_errors_and_roles_are_plain_messages(api: Api) -> None:
    code, out = cli(api, "quarantine", "nope")
    assert code == 2 and "404" in out and "nope" in out
    code, out = cli(api, "provision", "-m", "x", who="viewer")
    assert code == 2 and "403" in out and "editor" in out
    code, out = cli(api, "get", "gizmos")
    assert code == 2 and "unknown kind" in out


def test_without_a_server_the_cli_says_how_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MICROSEG_SERVER", raising=False)
    monkeypatch.delenv("MICROSEG_TOKEN", raising=False)
    monkeypatch.setenv("MICROSEG_CONFIG", str(tmp_path / "none.yaml"))
    result = runner.invoke(main.app, ["get", "workloads"])
    assert result.exit_code == 2 and "microseg login" in result.output
    result = runner.invoke(main.app, ["--server", "http://127.0.0.1:9", "--token", "t", "get", "workloads"])
    assert result.exit_code == 1 and "cannot reach" in result.output


def test_login_saves_a_private_config_that_later_commands_use(api: Api, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    config = tmp_path / "config.yaml"
    monkeypatch.setenv("MICROSEG_CONFIG", str(config))
    monkeypatch.delenv("MICROSEG_SERVER", raising=False)
    monkeypatch.delenv("MICROSEG_TOKEN", raising=False)
    result = runner.invoke(
        main.app, ["login", "--server", str(api.client.base_url), "--token", "msk_bad_bad"]
    )
    assert result.exit_code == 2 and not config.exists()
    result = runner.invoke(
        main.app, ["login", "--server", str(api.client.base_url), "--token", api.tokens["viewer"]]
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    result = runner.invoke(main.app, ["get", "versions", "-o", "json"])
    assert result.exit_code == 0 and json.loads(result.output) == []
