"""Simulation: replaying flows against a draft, grouped by change, rule and label pair."""

from __future__ import annotations

import json
import re

import pytest

from microseg.analytics import simulate
from microseg.model import verdicts
from microseg.model.workloads import Mode
from tests.analytics import (
    APP1,
    BILLING,
    DEV_APP,
    DEV_WEB,
    WEB1,
    draft_engine,
    example_engine,
    hour_of_traffic,
    row,
)

ENGINE = example_engine()
DRAFT = draft_engine()
Change = simulate.Change


def group(sim: simulate.Simulation, change: Change) -> simulate.Group:
    (found,) = [g for g in sim.groups if g.change is change]
    return found


def test_the_draft_blocks_billing_logs_dev_and_allows_the_partner() -> None:
    sim = simulate.simulate(hour_of_traffic(), ENGINE, DRAFT)
    totals = {c: (sim.flow_count(c), sim.connections(c)) for c in Change}
    # web->app is reported by both ends and counted once (10, not 20)
    assert totals == {
        Change.NEWLY_BLOCKED: (1, 4),
        Change.NEWLY_WOULD_BLOCK: (1, 3),
        Change.NEWLY_ALLOWED: (1, 2),
        Change.UNCHANGED: (3, 18),
    }


def test_groups_name_the_draft_rule_and_the_label_pair() -> None:
    sim = simulate.simulate(hour_of_traffic(), ENGINE, DRAFT)
    blocked = group(sim, Change.NEWLY_BLOCKED)
    assert (blocked.rule, blocked.source, blocked.destination) == (
        simulate.DEFAULT_DENY,
        "app=crm,env=prod,role=app",
        "env=prod,role=billing",
    )
    allowed = group(sim, Change.NEWLY_ALLOWED)
    assert (allowed.rule, allowed.destination) == ("application/prod-app-to-partner", "external")
    (example,) = allowed.examples
    assert (example.active_outcome, example.draft_outcome) == (
        verdicts.Outcome.BLOCKED,
        verdicts.Outcome.ALLOWED,
    )
    unchanged = {g.rule for g in sim.groups if g.change is Change.UNCHANGED}
    assert unchanged == {
        "application/prod-web-to-app",
        "application/users-to-prod-lb",
        "security/dev-never-reaches-prod",
    }


def test_a_denied_flow_between_alert_mode_workloads_would_block_and_is_not_blocked() -> None:
    sim = simulate.simulate([row("dev-app-1", "in", DEV_WEB, DEV_APP, 8443, connections=3)], ENGINE, DRAFT)
    (only,) = sim.groups
    assert only.change is Change.NEWLY_WOULD_BLOCK
    assert only.examples[0].draft_outcome is verdicts.Outcome.WOULD_BLOCK


def test_the_same_policy_changes_nothing() -> None:
    sim = simulate.simulate(hour_of_traffic(), ENGINE, example_engine())
    assert sim.flow_count(Change.UNCHANGED) == 6
    assert all(g.change is Change.UNCHANGED for g in sim.groups)
    assert "No replayed flow changes its outcome" in sim.to_markdown()


def test_flows_of_one_group_are_counted_together_and_examples_are_capped() -> None:
    rows = [row("r", "out", APP1, BILLING, 5000, bucket=3600.0 * i, connections=i + 1) for i in range(5)]
    (only,) = simulate.simulate(rows, ENGINE, DRAFT).groups
    assert (only.flows, only.connections, len(only.examples)) == (5, 15, simulate.EXAMPLES_PER_GROUP)


def test_json_and_table_and_markdown_carry_the_same_groups() -> None:
    sim = simulate.simulate(hour_of_traffic(), ENGINE, DRAFT)
    data = json.loads(json.dumps(sim.to_json()))
    assert data["totals"]["newly-blocked"] == {"flows": 1, "connections": 4}
    assert [g["change"] for g in data["groups"]][:3] == [
        "newly-blocked",
        "newly-would-block",
        "newly-allowed",
    ]
    table = sim.to_table().splitlines()
    assert table[0].split() == ["CHANGE", "RULE", "SOURCE", "DESTINATION", "FLOWS", "CONNECTIONS"]
    assert len(table) == 1 + len(sim.groups)
    md = [line for line in sim.to_markdown().splitlines() if line.startswith("|")]
    # every row of a table has as many cells as its header: totals (3 columns), changed groups (7)
    cells = [len(re.split(r"(?<!\\)\|", line)) - 2 for line in md]
    assert cells == [3] * 6 + [7] * (2 + 3)
    assert "`prod-app-1 (10.77.1.21) -> legacy-billing (10.77.9.50) 5000/tcp`" in sim.to_markdown()


def test_markdown_cells_escape_pipes() -> None:
    assert simulate._md("a|b`c") == "a\\|b'c"


def verdict(decision: str, outcome: str) -> verdicts.Verdict:
    return verdicts.Verdict(verdicts.Decision(decision), verdicts.Outcome(outcome), None, None, "", (), (),
                            Mode.ENFORCE, Mode.ENFORCE)  # fmt: skip


@pytest.mark.parametrize(
    ("active", "draft", "change"),
    [
        (("allow", "allowed"), ("deny", "blocked"), Change.NEWLY_BLOCKED),
        (("deny", "would-block"), ("deny", "blocked"), Change.NEWLY_BLOCKED),
        (("allow", "allowed"), ("deny", "would-block"), Change.NEWLY_WOULD_BLOCK),
        (("deny", "allowed"), ("deny", "would-block"), Change.NEWLY_WOULD_BLOCK),  # visibility -> alert
        (("deny", "blocked"), ("allow", "allowed"), Change.NEWLY_ALLOWED),
        (("deny", "would-block"), ("allow", "allowed"), Change.NEWLY_ALLOWED),
        (("allow", "allowed"), ("allow", "allowed"), Change.UNCHANGED),
        (("deny", "blocked"), ("deny", "blocked"), Change.UNCHANGED),
        (("deny", "blocked"), ("deny", "would-block"), Change.UNCHANGED),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, tuple) else str(v),
)
def test_classification(active: tuple[str, str], draft: tuple[str, str], change: Change) -> None:
    assert simulate.classify(verdict(*active), verdict(*draft)) is change


def test_process_reported_by_the_server_reaches_the_verdict() -> None:
    # web-http is pinned to nginx: a different serving process is not allowed by prod-lb-to-web
    rows = [row("prod-web-1", "in", "10.77.1.10", WEB1, 8080, process="python3")]
    sim = simulate.simulate(rows, ENGINE, DRAFT)
    assert sim.groups[0].examples[0].active_outcome is verdicts.Outcome.BLOCKED
