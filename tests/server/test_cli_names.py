"""The CLI against a real server: names go into URLs encoded (one path segment each, a rule's
`tier/name` two), and a 422 on `apply -f` says the file and line of each object it names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from microseg.cli import client, main
from microseg.store import database
from tests.server.conftest import Api, ok
from tests.server.estates import workload

runner = CliRunner()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """The CLI speaks HTTP only; one backend is enough here (the API suite runs both)."""
    yield database.sqlite_url(tmp_path / "data")


def cli(api: Api, *args: str) -> tuple[int, str]:
    base = ["--server", str(api.client.base_url), "--token", api.tokens["admin"]]
    result = runner.invoke(main.app, [*base, *args])
    return result.exit_code, result.output


def test_item_paths_encode_a_name_as_one_segment() -> None:
    assert client.item_path("workloads", "a?b#c/d") == "/workloads/a%3Fb%23c%2Fd"
    assert client.item_path("rules", "application/web-to-db") == "/rules/application/web-to-db"
    assert client.item_path("rules", "application/a b") == "/rules/application/a%20b"
    assert client.item_path("workloads", "web-1", "quarantine") == "/workloads/web-1/quarantine"


@pytest.mark.parametrize("verb", [("get", "workload"), ("delete", "workload"), ("quarantine",), ("release",)])
def test_a_name_with_url_characters_is_the_name_the_server_hears(api: Api, verb: tuple[str, ...]) -> None:
    ok(api.post("/apply", {"documents": [workload("web-1", "10.0.0.1", {})]}))
    code, out = cli(api, *verb, "web-1?x=1")
    assert code == 2
    assert "web-1?x=1" in out, out  # before: `?x=1` became a query, and web-1 itself was acted on
    assert ok(api.get("/workloads/web-1"))["spec"].get("addresses") == ["10.0.0.1"]
    assert ok(api.get("/audit"))["items"][0]["action"] == "create"


POLICY = """\
apiVersion: microseg.io/v1
kind: Policy
metadata: {{name: {name}}}
spec:
  tier: application
  rules:
    - name: {name}
      priority: 100
      action: {action}
      from: [{{selector: "{source}"}}]
      to: [{{selector: role=db}}]
      services: [{{port: 5432}}]
"""


def test_a_422_on_apply_names_the_file_and_line_of_the_object(api: Api, tmp_path: Path) -> None:
    first, second = tmp_path / "team-a.yaml", tmp_path / "team-b.yaml"
    first.write_text(POLICY.format(name="web-to-db", action="allow", source="role=web"))
    second.write_text(POLICY.format(name="no-prod-db", action="deny", source="env=prod"))
    code, out = cli(api, "apply", "-f", str(first))
    assert code == 0, out
    code, out = cli(api, "apply", "-f", str(second))
    assert code == 2
    flat = " ".join(out.split())
    assert (f"{second}:8: Rule/application/no-prod-db: spec.priority: rule no-prod-db (deny) and rule "
            "web-to-db (allow) both have priority 100") in flat, out  # fmt: skip
