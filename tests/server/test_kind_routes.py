"""What the per-kind table of `routes_objects` gives each kind: only workloads are picked by a
selector (and page through the selection), only their listing adds effective labels, mode and
agent state, and only rules live under /{tier}/{name}."""

from __future__ import annotations

from pathlib import Path

import pytest

from microseg.store import database
from tests.server.conftest import Api, ok
from tests.server.estates import example


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The routing is the same on both backends; the API suite runs both."""
    return database.sqlite_url(tmp_path / "data")


@pytest.fixture
def estate(api: Api) -> Api:
    ok(api.post("/apply", {"documents": example()}))
    return api


def names(listing: dict[str, object]) -> list[str]:
    items = listing["items"]
    assert isinstance(items, list)
    return [i["metadata"]["name"] for i in items]


def test_a_selector_picks_workloads_and_pages_through_what_it_picked(estate: Api) -> None:
    prod = names(ok(estate.get("/workloads", selector="env=prod")))
    every = names(ok(estate.get("/workloads")))
    assert "prod-db-1" in prod and set(prod) < set(every) and not any(n.startswith("dev-") for n in prod)
    first = ok(estate.get("/workloads", selector="env=prod", limit=2))
    rest = ok(estate.get("/workloads", selector="env=prod", continue_=first["continue"]))
    assert names(first) + names(rest) == prod and rest["continue"] is None


def test_other_kinds_ignore_a_selector(estate: Api) -> None:
    every = names(ok(estate.get("/services")))
    assert every and names(ok(estate.get("/services", selector="env=nothing-has-this"))) == every


def test_only_a_workload_listing_adds_labels_mode_and_agent_state(estate: Api) -> None:
    listed = ok(estate.get("/workloads", limit=1))["items"][0]["status"]
    assert {"effectiveLabels", "mode", "modeFrom", "quarantined", "agent"} <= set(listed)
    assert listed["agent"] == "no agent"
    service = ok(estate.get("/services", limit=1))["items"][0]["status"]
    assert set(service) == {"etag", "updatedAt", "updatedBy"}


def test_only_rules_are_addressed_by_tier_and_name(estate: Api) -> None:
    rule = ok(estate.get("/rules/security/dev-never-reaches-prod"))
    assert rule["spec"]["tier"] == "security"
    assert estate.get("/rules/dev-never-reaches-prod").status_code == 404
    paths = ok(estate.client.get("/openapi.json"))["paths"]
    assert "/api/v1/rules/{tier}/{name}" in paths and "/api/v1/rules/{name}" not in paths
    assert "/api/v1/services/{name}" in paths and "/api/v1/services/{tier}/{name}" not in paths
