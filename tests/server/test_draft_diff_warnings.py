"""The draft diff says, before anyone provisions, what provisioning would refuse (the invariants
the draft breaks, counted as the 409 counts them) and what the linter warns about; `microseg diff`
against the server prints both. SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from microseg.cli import main
from microseg.server import provisioning
from tests.server.conftest import Api, ok, problem
from tests.server.estates import doc, provision_example, rule


@pytest.fixture
def estate(api: Api) -> Api:
    """The example estate (clean for the linter, two invariants), provisioned as v1."""
    provision_example(api)
    return api


def break_env_separation(api: Api) -> None:
    """A draft without the guard rail and with an allow from dev to prod."""
    ok(api.delete("/rules/security/dev-never-reaches-prod"), 204)
    ok(api.post("/rules", rule("application", "oops", 900, "env=dev,role=web", "role=db", ["mysql"])), 201)


def cli(api: Api, *args: str) -> tuple[int, str]:
    env = {"MICROSEG_SERVER": str(api.client.base_url), "MICROSEG_TOKEN": api.tokens["viewer"]}
    done = CliRunner().invoke(main.app, list(args), env=env)
    return done.exit_code, done.output


def test_the_example_draft_has_no_warnings_and_refuses_nothing(estate: Api) -> None:
    found = ok(estate.get("/draft/diff"))
    assert (found["warnings"], found["warningsTotal"]) == ([], 0)
    assert found["invariants"]["refusing"] == 0


def test_a_typo_in_a_draft_rule_is_warned_with_the_labels_in_use(estate: Api) -> None:
    ok(
        estate.post("/rules", rule("application", "app-to-cache", 145, "role=app", "rol=cache", ["redis"])),
        201,
    )
    [found] = ok(estate.as_("viewer").get("/draft/diff"))["warnings"]
    assert (found["kind"], found["object"], found["name"], found["field"]) == (
        "selector-matches-nothing", "Rule", "application/app-to-cache", "to",
    )  # fmt: skip
    assert found["hint"] == "did you mean role=cache?"


def test_a_rule_made_redundant_in_the_draft_names_the_rule_above(estate: Api) -> None:
    ok(estate.post("/rules", rule("application", "again", 900, "env=prod,role=web", "env=prod,role=app",
                                  ["app-api"])), 201)  # fmt: skip
    [found] = ok(estate.get("/draft/diff"))["warnings"]
    assert (found["kind"], found["related"]) == ("redundant", ["application/prod-web-to-app"])


def test_the_diff_counts_what_provisioning_would_refuse_and_the_409_agrees(estate: Api) -> None:
    break_env_separation(estate)
    found = ok(estate.get("/draft/diff"))["invariants"]
    refused = problem(estate.post("/versions", {"note": "v2"}), 409)
    assert found["refusing"] == refused["total"] >= 1
    assert {v["invariant"] for v in found["violations"]} >= {"dev-never-reaches-prod"}


def test_microseg_diff_lists_the_broken_invariants_before_provision(estate: Api) -> None:
    break_env_separation(estate)
    code, out = cli(estate, "diff")
    assert code == 0, out
    assert "broken: invariant dev-never-reaches-prod (" in out
    assert "allowed by application/oops" in out
    assert "provision will refuse: " in out


def test_microseg_diff_prints_the_warnings(estate: Api) -> None:
    ok(
        estate.post("/rules", rule("application", "app-to-cache", 145, "role=app", "rol=cache", ["redis"])),
        201,
    )
    code, out = cli(estate, "diff")
    assert code == 0, out
    assert "warning: Rule application/app-to-cache: selector rol=cache in `to` matches no workload" in out
    assert "(did you mean role=cache?) [selector-matches-nothing]" in out
    assert "kept: 2 invariants" in out


def test_a_draft_full_of_findings_lists_a_bounded_number(
    estate: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many unused objects cost one line each in `warningsTotal`, not an unbounded answer."""
    monkeypatch.setattr(provisioning, "WARNING_LIMIT", 3)
    unused = [doc("Service", f"unused-{i}", {"ports": [{"port": 1000 + i}]}) for i in range(5)]
    ok(estate.post("/apply", {"documents": unused}))
    found = ok(estate.get("/draft/diff"))
    assert (len(found["warnings"]), found["warningsTotal"]) == (3, 5)
    code, out = cli(estate, "diff")
    assert code == 0 and "and 2 more warnings" in out, out
