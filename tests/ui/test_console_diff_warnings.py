"""The console's "Draft vs active" tab says what provisioning would refuse (the invariants the
draft breaks) and what the linter warns about, before anyone presses Provision."""

from __future__ import annotations

import pytest

from tests.server.conftest import Api, ok
from tests.server.estates import rule
from tests.ui.conftest import Console, expect

pytestmark = pytest.mark.ui


def test_the_draft_diff_shows_broken_invariants_and_lint_warnings(console: Console, demo: Api) -> None:
    ok(demo.delete("/rules/security/dev-never-reaches-prod"), 204)
    ok(demo.post("/rules", rule("application", "oops", 900, "env=dev,role=web", "role=db", ["mysql"])), 201)
    ok(demo.post("/rules", rule("application", "app-to-cache", 145, "role=app", "rol=cache", ["redis"])), 201)
    console.login(demo.tokens["viewer"])
    console.open("policy?tab=diff")
    page = console.page
    invariants = page.locator(".diff .invariants")
    expect(invariants).not_to_have_attribute("data-refusing", "0")
    expect(invariants).to_contain_text("Provisioning will be refused")
    expect(invariants.locator("li[data-invariant='dev-never-reaches-prod']").first).to_contain_text(
        "allowed by application/oops"
    )
    warning = page.locator(".diff .lint li[data-kind='selector-matches-nothing']")
    expect(warning).to_contain_text("selector rol=cache in `to` matches no workload")
    expect(warning).to_contain_text("did you mean role=cache?")
    console.shot("draft-diff-warnings")


def test_a_clean_draft_says_its_invariants_are_kept(console: Console, demo: Api) -> None:
    ok(demo.delete("/rules/application/prod-app-to-db"), 204)
    console.login(demo.tokens["viewer"])
    console.open("policy?tab=diff")
    page = console.page
    expect(page.locator(".diff .invariants")).to_have_attribute("data-refusing", "0")
    expect(page.locator(".diff .invariants")).to_contain_text("Every invariant is kept.")
    expect(page.locator(".diff .lint")).to_contain_text("Lint warnings: 0")
