"""`microseg explain --server [--version active|draft|N]` against a real server (SQLite and
PostgreSQL): the server's `POST /explain` answers with the same words, runs and exit codes as
`explain` on the same files, under the active version, the draft or any version; bad input is an
exit 2 (CLI) or a 422 naming the field (API), never a traceback or a 5xx."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from microseg.cli import main
from tests.cli.test_exact_answers import SMALL
from tests.server.conftest import Api, ok, problem

ESTATE = (
    SMALL
    + """\
    - {name: web-to-api-admin, priority: 110, action: allow, from: [{selector: role=web}],
       to: [{selector: role=api}], services: [{port: 8443}], notAfter: "2030-01-01T00:00:00Z"}
"""
)
"""The offline tests' estate plus a timed rule, so versions and `at` can differ."""
FLOW = ("--from", "web-1", "--to", "api-1")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "estate.yaml").write_text(ESTATE)
    return tmp_path / "estate.yaml"


@pytest.fixture
def provisioned(api: Api, files: Path) -> Api:
    """The estate applied with the CLI and provisioned as v1."""
    assert cli(api, "apply", "-f", str(files), who="editor").exit_code == 0
    assert cli(api, "provision", "-m", "v1", who="editor").exit_code == 0
    return api


def cli(api: Api, *args: str, who: str = "viewer") -> Result:
    base = ["--server", str(api.client.base_url), "--token", api.tokens[who]]
    return CliRunner().invoke(main.app, [*base, *args])


def local(files: Path, *args: str) -> Result:
    return CliRunner().invoke(main.app, ["explain", "-f", str(files), *args])


@pytest.mark.parametrize(
    "port", ["8080/tcp", "tcp/8080", "8080", "api", "8000-8090/tcp", "9000-9001/tcp", "22", "udp/53", "icmp"]
)
def test_the_server_answers_as_explain_on_the_same_files(provisioned: Api, files: Path, port: str) -> None:
    asked = cli(provisioned, "explain", "--server", *FLOW, "--port", port)
    offline = local(files, *FLOW, "--port", port)
    assert asked.exit_code == offline.exit_code == 0, (asked.output, offline.output)
    assert asked.stdout == offline.stdout
    as_json = cli(provisioned, "explain", "--server", *FLOW, "--port", port, "-o", "json")
    assert json.loads(as_json.stdout) == json.loads(local(files, *FLOW, "--port", port, "-o", "json").stdout)


def test_a_range_is_answered_in_runs_with_the_deciding_rule_of_each(provisioned: Api) -> None:
    asked = cli(provisioned, "explain", "--server", *FLOW, "--port", "8079-8081/tcp", "-o", "json")
    runs = [(v["port"], v["verdict"]["rule"]) for v in json.loads(asked.stdout)["verdicts"]]
    assert runs == [("8079/tcp", None), ("8080/tcp", "application/web-to-api"), ("8081/tcp", None)]


def test_expect_exits_1_on_a_mismatch_and_0_when_met(provisioned: Api) -> None:
    assert (
        cli(provisioned, "explain", "--server", *FLOW, "--port", "tcp/8080", "--expect", "allowed").exit_code
        == 0
    )
    missed = cli(provisioned, "explain", "--server", *FLOW, "--port", "tcp/8080", "--expect", "blocked")
    assert missed.exit_code == 1 and "expected" in missed.stderr
    mixed = cli(provisioned, "explain", "--server", *FLOW, "--port", "8079-8080/tcp", "--expect", "allowed")
    assert mixed.exit_code == 1


def test_version_picks_active_draft_or_a_number(provisioned: Api) -> None:
    ok(provisioned.delete("/rules/application/web-to-api"), 204)  # in the draft only

    def rule(*version: str) -> str | None:
        found = cli(provisioned, "explain", "--server", *FLOW, "--port", "8080/tcp", *version, "-o", "json")
        assert found.exit_code == 0, found.output
        rule: str | None = json.loads(found.stdout)["verdict"]["rule"]
        return rule

    assert rule() == rule("--version", "active") == rule("--version", "1") == "application/web-to-api"
    assert rule("--version", "v1") == "application/web-to-api"
    assert rule("--version", "draft") is None
    shown = cli(provisioned, "explain", "--server", *FLOW, "--port", "8080/tcp", "--version", "draft")
    assert "(none: default deny)" in shown.stdout and "blocked" in shown.stdout


def test_at_is_sent_and_decides_time_bound_rules(provisioned: Api, files: Path) -> None:
    for at, rule in (("2029-06-01T00:00:00", "application/web-to-api-admin"), ("2031-06-01T00:00:00", None)):
        asked = cli(provisioned, "explain", "--server", *FLOW, "--port", "8443", "--at", at, "-o", "json")
        assert json.loads(asked.stdout)["verdict"]["rule"] == rule, asked.output
        assert asked.stdout == local(files, *FLOW, "--port", "8443", "--at", at, "-o", "json").stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--port", "https"), "neither a port nor a known service"),
        (("--port", "80/foo"), "unknown protocol"),
        (("--port", "0/tcp"), "1-65535"),
        (("--port", "tcp"), "at most 1024"),
        (("--port", "8080", "--version", "latest"), "expected active, draft or a version number"),
        (("--port", "8080", "--version", "7"), "404"),
        (("--port", "8080", "--example"), "give it no -f or --example"),
    ],
)
def test_bad_input_exits_2_with_a_message(provisioned: Api, args: tuple[str, ...], said: str) -> None:
    found = cli(provisioned, "explain", "--server", *FLOW, *args)
    assert found.exit_code == 2 and said in found.stderr, found.output
    assert found.exception is None or isinstance(found.exception, SystemExit)


def test_version_without_server_is_an_error(files: Path) -> None:
    found = local(files, *FLOW, "--port", "8080", "--version", "draft")
    assert found.exit_code == 2 and "add --server" in found.stderr


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"port": "tcp"}, "port"),
        ({"port": "1-65535/tcp"}, "port"),
        ({"port": "x" * 101}, "port"),
        ({"at": "2030-01-01T00:00:00"}, "at"),
        ({"at": "9999-12-31T23:59:59-12:00"}, "at"),
        ({"at": "0001-01-01T00:00:00+14:00"}, "at"),
        ({"at": "soon"}, "at"),
        ({"clientProcess": "p" * 301}, "clientProcess"),
        ({"clientProcess": 5}, "clientProcess"),
    ],
)
def test_the_api_refuses_bad_explain_fields_naming_them(
    provisioned: Api, body: dict[str, object], field: str
) -> None:
    flow = {"from": "web-1", "to": "api-1", "port": "8080/tcp", **body}
    found = problem(provisioned.as_("viewer").post("/explain", flow), 422)
    assert field in json.dumps(found)


def test_a_viewer_gets_runs_for_a_service_and_a_single_port_keeps_its_old_shape(provisioned: Api) -> None:
    viewer = provisioned.as_("viewer")
    one = ok(viewer.post("/explain", {"from": "web-1", "to": "api-1", "port": "8080/tcp"}))
    assert one["port"] == "8080/tcp" and one["verdict"]["rule"] == "application/web-to-api"
    assert one["verdicts"] == [{"port": "8080/tcp", "verdict": one["verdict"]}]
    service = ok(
        viewer.post("/explain", {"from": "web-1", "to": "api-1", "port": "api", "clientProcess": "curl"})
    )
    assert [v["port"] for v in service["verdicts"]] == ["8080/tcp", "9000-9001/tcp"]
    assert service["port"] is None and "verdict" not in service
