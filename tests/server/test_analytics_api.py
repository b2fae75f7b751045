"""The analytics endpoints over real uploads: the dependency map (JSON and DOT), the draft
simulated against the stored flows, recommendations and accepting them into the draft; bad input
as problem+json and no access for agents. The analyses themselves are tested in tests/analytics."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from microseg.cli import main, output
from microseg.store import summaries
from tests.server.conftest import Api, ok, problem
from tests.server.estates import provision_example
from tests.server.test_flow_summary import enroll, flow, send

AT = summaries.bucket_of(time.time()) - 3600
APP, WEB, DB = "10.77.1.21", "10.77.1.11", "10.77.1.31"


@pytest.fixture
def estate(api: Api) -> Api:
    """The example estate provisioned; prod-db-1's agent reports app -> db allowed, web -> db blocked."""
    provision_example(api)
    db = enroll(api, "prod-db-1", DB, {})
    assert send(db, "b-1", flow(APP, DB, 3306, AT, process="mysqld", rule="application/prod-app-to-db"),
                flow(WEB, DB, 3306, AT, verdict="blocked", rule="default", connections=4))  # fmt: skip
    return api


def test_the_map_groups_by_labels_and_colours_edges_by_verdict(estate: Api) -> None:
    graph = ok(estate.get("/flows/map", groupBy="role", within="env"))
    names = {n["id"] for n in graph["nodes"]}
    assert {"group:env=prod,role=app", "group:env=prod,role=db", "group:env=prod,role=web"} <= names
    edges = {(e["source"], e["destination"]): e for e in graph["edges"]}
    to_db = edges[("group:env=prod,role=app", "group:env=prod,role=db")]
    assert [p["port"] for p in to_db["ports"]] == [3306]
    dot = estate.get("/flows/map", groupBy="role", format="dot")
    assert dot.status_code == 200 and dot.headers["content-type"].startswith("text/vnd.graphviz")
    assert dot.text.startswith("digraph") and dot.text.count("->") == len(
        ok(estate.get("/flows/map", groupBy="role"))["edges"]
    )


def test_simulating_a_draft_that_drops_the_db_rule_shows_what_it_would_block(estate: Api) -> None:
    unchanged = ok(estate.get("/flows/simulate"))
    assert unchanged["totals"]["newly-blocked"]["flows"] == 0
    ok(estate.delete("/rules/application/prod-app-to-db"), 204)
    result = ok(estate.get("/flows/simulate", since="7d"))
    assert result["totals"]["newly-blocked"]["flows"] == 1
    markdown = estate.get("/flows/simulate", format="markdown")
    assert markdown.status_code == 200 and "|" in markdown.text and "3306" in markdown.text


def test_recommendations_cover_the_flows_and_accepting_writes_the_draft(estate: Api) -> None:
    ok(estate.delete("/rules/application/prod-app-to-db"), 204)
    proposal = ok(estate.get("/flows/recommend", groupBy="env,role"))
    assert proposal["coverage"] == 50.0 and proposal["documents"]  # per cent of the observed flows
    # web -> db was blocked when seen: an intruder's attempt is no reason to allow it
    assert [lo["flow"].split(" -> ")[0] for lo in proposal["leftOut"]] == [f"prod-web-1 ({WEB})"]
    accepted = ok(estate.as_("editor").post("/flows/recommend/accept", groupBy="env,role"))
    assert accepted["applied"]
    assert (
        ok(estate.get("/flows/recommend", groupBy="env,role"))["documents"] == []
    )  # nothing left to propose
    diff = ok(estate.get("/draft/diff"))
    assert "3306" in str(diff)


def test_bad_input_and_agents_are_refused(estate: Api) -> None:
    assert problem(estate.get("/flows/recommend", groupBy=""), 422)["status"] == 422
    problem(estate.get("/flows/map", since="yesterday"), 422)
    problem(estate.as_("viewer").post("/flows/recommend/accept", groupBy="role"), 403)
    agent = enroll(estate, "prod-web-1", WEB, {})
    problem(agent.get("/flows/map"), 403)


def test_the_cli_prints_the_map_as_dot_the_simulation_as_markdown_and_accepts(
    estate: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output.console, "width", 250)
    base = ["--server", str(estate.client.base_url), "--token", estate.tokens["editor"]]
    runner = CliRunner()
    dot = runner.invoke(main.app, [*base, "map", "--group-by", "role", "-o", "dot"])
    assert dot.exit_code == 0 and dot.output.startswith("digraph"), dot.output
    table = runner.invoke(main.app, [*base, "map", "--group-by", "role"])
    assert table.exit_code == 0 and "3306/tcp" in table.output
    ok(estate.delete("/rules/application/prod-app-to-db"), 204)
    md = runner.invoke(main.app, [*base, "simulate", "--since", "30d", "-o", "md"])
    assert md.exit_code == 0 and "|" in md.output and "3306" in md.output
    proposal = runner.invoke(main.app, [*base, "recommend", "--group-by", "env,role"])
    assert proposal.exit_code == 0 and "coverage 50.0 %" in proposal.output
    accepted = runner.invoke(main.app, [*base, "recommend", "--group-by", "env,role", "--accept"])
    assert accepted.exit_code == 0 and "written into the draft" in accepted.output
    again = json.loads(
        runner.invoke(main.app, [*base, "recommend", "--group-by", "env,role", "-o", "json"]).output
    )
    assert again["documents"] == []
    bad = runner.invoke(main.app, [*base, "map", "--since", "whenever"])
    assert bad.exit_code == 2 and "since" in bad.output


def test_rule_hits_name_the_deciding_rules_and_the_unused_ones(estate: Api) -> None:
    found = ok(estate.get("/flows/rule-hits", since="7d"))
    hits = {h["rule"]: h for h in found["rules"]}
    assert hits["application/prod-app-to-db"]["connections"] == 1
    assert (hits["default"]["connections"], hits["default"]["verdicts"]) == (4, ["blocked"])
    assert (
        "application/prod-web-to-app" in found["unused"]
        and "application/prod-app-to-db" not in found["unused"]
    )
    base = ["--server", str(estate.client.base_url), "--token", estate.tokens["viewer"]]
    unused = CliRunner().invoke(main.app, [*base, "rule-hits", "--unused", "-o", "json"])
    assert unused.exit_code == 0 and json.loads(unused.output) == found["unused"]
