"""The listings that are not policy documents (versions, agents) have one typed shape
(`server/responses.py`): the routes answer through it, the OpenAPI publishes it, and the CLI's
tables read it."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from microseg.cli import main
from microseg.server import provisioning, responses, status
from microseg.server.runtime import Runtime
from microseg.store import agents, database, versions
from tests.server.conftest import Api, ok
from tests.server.estates import doc, provision_example


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """What is checked is the HTTP shape; the API suite runs both backends."""
    return database.sqlite_url(tmp_path / "data")


def rows(api: Api, *args: str) -> list[list[str]]:
    """The body rows of a `microseg` table, cells stripped."""
    base = ["--server", str(api.client.base_url), "--token", api.tokens["viewer"]]
    result = CliRunner().invoke(main.app, [*base, *args], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    return [[c.strip() for c in line.strip("│").split("│")] for line in lines if line.startswith("│")]


def listed_agents(api: Api) -> list[dict[str, Any]]:
    """Two agents: one that reported a failure on nftables, one that never reported."""
    made = ok(api.post("/enrollment-tokens", {"name": "two", "reusable": True}), 201)
    for host, address in (("shape-1", "10.98.0.1"), ("shape-2", "10.98.0.2")):
        body = {"token": made["token"], "inventory": {"hostname": host, "addresses": [address]}}
        enrolled = ok(api.as_("none").post("/agent/enroll", body), 201)
        if host == "shape-1":
            report = {"appliedHash": "old", "dataplane": "nftables", "errors": ["nft: exit 1"]}
            ok(api.as_(enrolled["credential"]).post("/agent/status", report))
    items: list[dict[str, Any]] = ok(api.get("/agents"))["items"]
    return items


def three_versions(api: Api) -> None:
    """v1 (the example), v2 (a service added), v3 (a rollback to v1)."""
    provision_example(api)
    ok(api.post("/services", doc("Service", "statsd", {"ports": [{"port": 8125, "protocol": "udp"}]})), 201)
    ok(api.post("/versions", {"note": "statsd"}), 201)
    ok(api.post("/versions/1/rollback", {"note": "back"}), 201)


def test_agent_states_are_the_ones_the_server_computes() -> None:
    assert typing.get_args(responses.AgentState) == status.STATES


def test_the_openapi_publishes_the_listing_models(api: Api) -> None:
    spec = ok(api.client.get("/openapi.json"))
    for path, model in (("/api/v1/versions", "VersionList"), ("/api/v1/agents", "AgentList")):
        answer = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer == {"$ref": f"#/components/schemas/{model}"}
    agent = spec["components"]["schemas"]["Agent"]
    assert agent["properties"]["state"]["enum"] == list(status.STATES)
    assert "credential" not in agent["properties"] and "secret_hash" not in agent["properties"]


class NoDocuments:
    """A runtime that has computed no ruleset for any workload."""

    def expected_hash(self, workload: str, **how: Any) -> str | None:
        return None


def test_the_models_declare_every_field_the_server_builds_in_its_order(api: Api) -> None:
    # The routes answer through the models, which drop what they do not declare: so the
    # builders, not the answers, are what a model is checked against.
    listed_agents(api)
    with api.db.read() as conn:
        built = status.agent_json(typing.cast(Runtime, NoDocuments()), agents.listing(conn)[0])
    assert list(built) == list(responses.Agent.model_fields)
    made = versions.new(
        1, note="n", actor="a", documents=[], changes={"added": [], "removed": [], "changed": []}
    )
    assert list(provisioning.version_json(made)) == list(responses.Version.model_fields)


def test_the_agents_listing_reads_as_the_model(api: Api) -> None:
    provision_example(api)
    items = listed_agents(api)
    assert [list(a) for a in items] == [list(responses.Agent.model_fields)] * 2
    failed = responses.Agent.model_validate(items[0])
    assert (failed.workload, failed.state, failed.dataplane, failed.errors) == (
        "shape-1", "failed", "nftables", ["nft: exit 1"]
    )  # fmt: skip
    assert responses.Agent.model_validate(items[1]).state == "stale"


def test_the_versions_listing_reads_as_the_model_with_a_rollback(api: Api) -> None:
    three_versions(api)
    items = ok(api.get("/versions"))["items"]
    assert [list(v) for v in items] == [list(responses.Version.model_fields)] * 3
    newest = responses.Version.model_validate(items[0])
    assert (newest.name, newest.rollbackOf, newest.changes["removed"]) == ("v3", 1, ["Service/statsd"])


def test_the_cli_tables_of_versions_and_agents_read_the_models(api: Api) -> None:
    three_versions(api)
    listed_agents(api)
    versions = rows(api, "get", "versions")
    assert [(r[0], r[3]) for r in versions] == [
        ("v3 (rollback of v1)", "back"),
        ("v2", "statsd"),
        ("v1", "v1"),
    ]
    agents = rows(api, "get", "agents")
    assert [r[:4] for r in agents] == [
        ["shape-1", "failed", "yes", "nftables"],
        ["shape-2", "stale", "yes", "-"],
    ]
