"""What `microseg get` shows of each listed path (cli/listing.py), offline: every listing's row
for a fixed item, the policy documents' row, services as people write them, rules in evaluation
order, and the whole `get` table through the command with a fake server. Against a real server:
tests/server/test_cli_readable.py."""

from __future__ import annotations

from typing import Any, cast

import pytest
from typer.testing import CliRunner

from microseg.cli import client, listing, main

AT = 1765101600.0
"""2025-12-07T10:00:00Z."""
AGENT: listing.Item = {
    "id": "ag1", "workload": "web-1", "state": "in sync", "online": True, "lastSeen": AT,
    "enrolledAt": AT, "enrollmentToken": None, "appliedHash": None, "expectedHash": None,
    "dataplane": None, "errors": [], "warnings": [], "tampered": False, "revoked": False,
    "inventory": {}, "silentFor": 0.1,
}  # fmt: skip
RULE: listing.Item = {
    "metadata": {"name": "web-to-db"},
    "spec": {
        "tier": "application", "priority": 10, "action": "allow",
        "from": [{"selector": "role=web"}, {"a": "1", "b": "2"}], "to": [{"iplist": "office"}],
        "services": ["mysql", {"port": 8000, "endPort": 8080, "protocol": "TCP"}, {"protocol": "icmp", "type": 8}],
    },
}  # fmt: skip
ROWS: dict[str, tuple[listing.Item, list[str]]] = {
    "workloads": (
        {"metadata": {"name": "web-1"}, "spec": {"addresses": ["10.0.0.1", "10.0.0.2"]},
         "status": {"effectiveLabels": {"role": "web", "env": "[k8s]prod"}, "mode": "enforce"}},
        ["web-1", "10.0.0.1,10.0.0.2", "env=[k8s]prod,role=web", "enforce", "-"],
    ),
    "rules": (
        RULE,
        ["application/web-to-db", "10", "allow", "role=web {'a': '1', 'b': '2'}", "office",
         "mysql, 8000-8080/tcp, icmp type 8"],
    ),
    "versions": (
        {"number": 3, "name": "v3", "note": "back", "createdAt": AT + 0.7, "createdBy": "alice",
         "rollbackOf": 1, "changes": {}},
        ["v3 (rollback of v1)", "2025-12-07T10:00:00Z", "alice", "back"],
    ),
    "agents": (AGENT, ["web-1", "in sync", "yes", "-", "2025-12-07T10:00:00Z"]),
}  # fmt: skip
"""Each listing's item and the row it shows: one per entry of `listing.LISTINGS`."""
DOCUMENT: listing.Item = {
    "metadata": {"name": "office"},
    "spec": {"networks": ["10.1.0.0/16"]},
    "status": {"updatedAt": AT, "updatedBy": "bob [admin]"},
}


def test_every_listing_has_its_row_pinned_here() -> None:
    assert set(ROWS) == set(listing.LISTINGS)


@pytest.mark.parametrize("path", sorted(ROWS))
def test_each_listing_shows_its_row(path: str) -> None:
    item, row = ROWS[path]
    shown = listing.of(path)
    assert shown is listing.LISTINGS[path]
    assert len(shown.headers) == len(row)
    assert shown.row(item) == row


@pytest.mark.parametrize("path", ["services", "iplists", "tiers", "invariants", "settings"])
def test_policy_documents_say_who_changed_each_and_when(path: str) -> None:
    shown = listing.of(path)
    assert shown is listing.DOCUMENTS
    assert shown.headers == ("NAME", "UPDATED", "BY")
    assert shown.row(DOCUMENT) == ["office", "2025-12-07T10:00:00Z", "bob [admin]"]


@pytest.mark.parametrize(
    ("services", "text"),
    [
        (["mysql"], "mysql"),
        ([{"port": 3306}], "3306/tcp"),
        ([{"port": 8000, "endPort": 8080, "protocol": "TCP"}], "8000-8080/tcp"),
        ([{"protocol": "icmp"}], "icmp"),
        ("any", "any"),
        (None, "None"),
        (["dns", {"port": 53, "protocol": "udp"}], "dns, 53/udp"),
    ],
    ids=["named", "port", "range", "protocol-only", "any", "none", "several"],
)
def test_services_read_as_written(services: Any, text: str) -> None:
    assert listing.service_text(services) == text


def test_only_paged_paths_send_a_selector_and_a_page_size() -> None:
    assert listing.of("workloads").query("role=web") == {"selector": "role=web", "limit": 10_000}
    assert listing.of("versions").query("role=web") == {}


class FakeServer:
    """The few reads `get` makes: the listed path, and the tiers when rules are ordered."""

    def __init__(self, lists: dict[str, list[listing.Item]]) -> None:
        self.lists = lists
        self.asked: list[tuple[str, dict[str, Any]]] = []

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        self.asked.append((path, query))
        return {"items": self.lists.get(path, [])}

    def close(self) -> None:
        pass


def rule(tier: str, priority: Any, name: str) -> listing.Item:
    return {"metadata": {"name": name}, "spec": {"tier": tier, "priority": priority}}


TIERS = [{"metadata": {"name": "platform"}, "spec": {"order": 250}}]
UNORDERED = [
    rule("nowhere", 1, "unknown-tier"),
    rule("application", 5, "b"),
    rule("application", "high", "no-priority"),
    rule("platform", 1, "between"),
    rule("application", 5, "a"),
    rule("security", 50, "guard"),
]


def test_rules_are_listed_in_evaluation_order() -> None:
    server = FakeServer({"/tiers": TIERS})
    rows = listing.of("rules").rows(cast(client.Client, server), UNORDERED)
    names = [r[0] for r in rows]
    assert names == ["security/guard", "platform/between", "application/a", "application/b",
                     "application/no-priority", "nowhere/unknown-tier"]  # fmt: skip
    assert server.asked == [("/tiers", {})]


def test_get_prints_the_listing_as_a_table(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeServer({"/rules": [RULE], "/agents": [AGENT]})
    monkeypatch.setattr(client, "Client", lambda target: server)
    runner = CliRunner()
    args = ["--server", "http://127.0.0.1:9", "--token", "t", "get"]
    found = runner.invoke(main.app, [*args, "rules"], env={"COLUMNS": "200"})
    assert found.exit_code == 0, found.output
    lines = found.output.splitlines()
    assert lines[0] == "rules (1)"
    assert [c.strip() for c in lines[2].strip("┃").split("┃")] == list(listing.LISTINGS["rules"].headers)
    assert [c.strip() for c in lines[4].strip("│").split("│")] == ROWS["rules"][1]
    assert server.asked[0] == ("/rules", {"selector": None, "limit": 10_000})
    found = runner.invoke(main.app, [*args, "agent", "-l", "role=web"], env={"COLUMNS": "200"})
    assert found.exit_code == 0, found.output
    assert "agents (1)" in found.output and "2025-12-07T10:00:00Z" in found.output
    assert server.asked[-1] == ("/agents", {"selector": "role=web", "limit": 10_000})
