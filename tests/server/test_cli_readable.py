"""Output people can read from the commands against a real server (issue 16, items 14 and 15):
`get rules` in evaluation order with services as written, RFC 3339 times, `events` and `audit`
newest first as in the console, piped tables never cut, `recommend` as YAML, `login` naming the
token's role, and a warning when a quarantine has no agent to enforce it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from microseg.cli import main
from microseg.store import database, summaries
from tests.server.conftest import Api, ok
from tests.server.estates import provision_example
from tests.server.test_flow_summary import enroll, flow, send

RFC_3339 = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b")
AT = summaries.bucket_of(time.time()) - 3600
APP, WEB, DB = "10.77.1.21", "10.77.1.11", "10.77.1.31"


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """The CLI speaks HTTP only; one backend is enough here (the API suite runs both)."""
    yield database.sqlite_url(tmp_path / "data")


@pytest.fixture
def estate(api: Api) -> Api:
    provision_example(api)
    return api


def cli(api: Api, *args: str, who: str = "admin", columns: int = 80) -> Result:
    base = ["--server", str(api.client.base_url), "--token", api.tokens[who]]
    return CliRunner().invoke(main.app, [*base, *args], env={"COLUMNS": str(columns)})


def rows(out: str) -> list[list[str]]:
    """The body rows of a Rich table, cells stripped."""
    return [
        [c.strip() for c in line.strip("│").split("│")] for line in out.splitlines() if line.startswith("│")
    ]


def test_get_rules_lists_them_in_evaluation_order_with_services_as_written(estate: Api) -> None:
    found = cli(estate, "get", "rules")
    assert found.exit_code == 0, found.output
    listed = [(r[0], int(r[1])) for r in rows(found.stdout)]
    security = [p for name, p in listed if name.startswith("security/")]
    application = [p for name, p in listed if name.startswith("application/")]
    assert [name.split("/")[0] for name, _ in listed] == ["security"] * 2 + ["application"] * 13
    assert security == sorted(security) and application == sorted(application)
    services = {r[0]: r[5] for r in rows(found.stdout)}
    assert services["application/prod-app-to-db"] == "mysql"
    assert services["application/bastion-ssh"] in ("ssh", "22/tcp process sshd")
    assert services["security/dev-never-reaches-prod"] == "any"
    assert not any(c in text for text in services.values() for c in "[]{}\"'")


def test_inline_services_read_as_ports_and_protocols(estate: Api) -> None:
    rule = {"apiVersion": "microseg.io/v1", "kind": "Rule", "metadata": {"name": "inline"},
            "spec": {"tier": "application", "priority": 5, "action": "allow", "from": [{"selector": "role=web"}],
                     "to": [{"selector": "role=db"}],
                     "services": [{"port": 3306}, {"port": 9000, "endPort": 9009, "protocol": "udp"},
                                  {"protocol": "icmp"}]}}  # fmt: skip
    ok(estate.post("/rules", rule), 201)
    found = {r[0]: r[5] for r in rows(cli(estate, "get", "rules", columns=300).stdout)}
    assert found["application/inline"] == "3306/tcp, 9000-9009/udp, icmp"


def test_a_piped_table_is_not_cut_to_the_terminal(estate: Api) -> None:
    found = cli(estate, "get", "workloads", columns=40)
    assert "…" not in found.stdout
    assert "app=crm,env=prod,role=db" in found.stdout


def test_times_are_rfc_3339_everywhere_a_table_shows_one(estate: Api) -> None:
    for args in (("get", "versions"), ("audit",), ("get", "services"), ("token", "list")):
        found = cli(estate, *args)
        assert found.exit_code == 0, found.output
        cells = [c for row in rows(found.stdout) for c in row]
        assert any(RFC_3339.fullmatch(c) for c in cells), (args, found.stdout)
        assert not any(re.fullmatch(r"\d{10}(\.\d+)?|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", c) for c in cells)


def test_events_and_audit_list_the_newest_first_as_the_console(estate: Api) -> None:
    for _ in range(2):
        assert cli(estate, "quarantine", "prod-db-1").exit_code == 0
        assert cli(estate, "release", "prod-db-1").exit_code == 0
    audit_ids = [int(r[0]) for r in rows(cli(estate, "audit").stdout)]
    assert audit_ids == sorted(audit_ids, reverse=True) and len(audit_ids) > 4
    newest = [int(r[0]) for r in rows(cli(estate, "audit", "--limit", "2").stdout)]
    assert newest == audit_ids[:2]
    events = rows(cli(estate, "events").stdout)
    assert [e[2] for e in events] == ["release", "quarantine", "release", "quarantine"]
    assert [int(e[0]) for e in events] == sorted((int(e[0]) for e in events), reverse=True)


def test_login_prints_the_role_of_the_token(estate: Api, tmp_path: Path) -> None:
    found = CliRunner().invoke(
        main.app,
        [
            "login",
            "--server",
            str(estate.client.base_url),
            "--token",
            estate.tokens["viewer"],
            "--config",
            str(tmp_path / "config.yaml"),
        ],
    )
    assert found.exit_code == 0, found.output
    assert "role viewer" in found.stdout and "test-viewer" in found.stdout


def test_a_quarantine_without_an_agent_warns_that_nothing_enforces_it(estate: Api) -> None:
    bare = cli(estate, "quarantine", "prod-web-1")
    assert bare.exit_code == 0 and "nothing enforces" in bare.stderr, bare.output
    enroll(estate, "prod-db-1", DB, {})
    enforced = cli(estate, "quarantine", "prod-db-1")
    assert enforced.exit_code == 0 and "quarantined" in enforced.stdout and enforced.stderr == ""


def test_recommend_prints_a_policy_file_in_yaml(estate: Api) -> None:
    db = enroll(estate, "prod-db-1", DB, {})
    assert send(db, "b-1", flow(APP, DB, 6000, AT, process="exporter"),
                flow(WEB, DB, 3306, AT, verdict="blocked", rule="default", connections=4))  # fmt: skip
    found = cli(estate, "recommend", "--group-by", "env,role", who="editor")
    assert found.exit_code == 0, found.output
    assert found.stdout.startswith("# recommended rules: coverage 50.0 % of observed flows")
    assert "# 1 flow left out" in found.stdout
    docs = [d for d in yaml.safe_load_all(found.stdout) if d]
    assert docs and all(d["apiVersion"] == "microseg.io/v1" for d in docs)
    rules = [r for d in docs if d["kind"] == "Policy" for r in d["spec"]["rules"]]
    assert rules and all(isinstance(r["from"], list) and isinstance(r["services"], list) for r in rules)
    assert "{'" not in found.stdout
