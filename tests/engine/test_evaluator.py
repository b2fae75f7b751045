"""The one evaluator: a truth table over a small estate that exercises every rule of the semantics."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from microseg.engine import engine
from microseg.errors import LookupFailedError, ValidationError
from microseg.model import addresses, estate, rules, selectors, services, verdicts
from microseg.model.workloads import Mode
from tests.engine.estates import HTTP, TCP, UDP, crm_estate, rule, sel, wl

JAN = datetime(2026, 1, 15, tzinfo=UTC)
MAR = datetime(2026, 3, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def crm() -> engine.PolicyEngine:
    return engine.PolicyEngine(crm_estate())


# (id, source, destination, port, protocol, outcome, deciding rule)
CASES = [
    ("lb reaches web on 443", "lb-1", "web-1", 443, TCP, "allowed", "application/lb-to-web"),
    ("web reaches db on mysql", "web-1", "db-1", 3306, TCP, "allowed", "application/web-to-db"),
    ("web cannot reach db on 22", "web-1", "db-1", 22, TCP, "blocked", None),
    ("db cannot reach web (direction matters)", "db-1", "web-1", 3306, TCP, "blocked", None),
    (
        "security deny beats application allow",
        "dev-web",
        "db-1",
        3306,
        TCP,
        "blocked",
        "security/env-separation",
    ),
    (
        "priority: bastion-ssh (50) before env-separation",
        "bastion",
        "db-1",
        22,
        TCP,
        "allowed",
        "security/bastion-ssh",
    ),
    ("ip list peer", "10.77.200.7", "lb-1", 443, TCP, "allowed", "security/corp-to-lb"),
    ("ip list peer, other port", "10.77.200.7", "lb-1", 22, TCP, "blocked", None),
    ("any source to dns over udp", "10.77.123.4", "dns-1", 53, UDP, "allowed", "application/all-dns"),
    (
        "visibility destination, external source: nothing blocks",
        "10.77.123.4",
        "dns-1",
        9999,
        TCP,
        "allowed",
        None,
    ),
    ("enforcing source blocks on egress", "web-1", "dns-1", 9999, TCP, "blocked", None),
    ("alert destination, external source: would-block", "10.77.123.4", "web-2", 22, TCP, "would-block", None),
    ("enforcing source blocks even to an alert destination", "lb-1", "web-2", 8080, TCP, "blocked", None),
    (
        "unmanaged destination resolved by CIDR",
        "db-1",
        "10.77.9.5",
        5000,
        TCP,
        "allowed",
        "application/db-to-legacy",
    ),
    ("unmanaged to unmanaged: nobody enforces", "10.77.9.5", "10.77.123.9", 80, TCP, "allowed", None),
    ("cidr peer", "10.77.8.5", "web-1", 443, TCP, "allowed", "application/net-to-web"),
    ("cidr except carves out", "10.77.8.200", "web-1", 443, TCP, "blocked", None),
    ("security deny of any source", "10.77.8.5", "web-1", 80, TCP, "blocked", "security/block-rest-prod"),
    ("pass skips the rest of its tier", "lb-1", "web-1", 80, TCP, "allowed", "application/lb-to-web"),
    ("quarantine isolates inbound", "lb-1", "bad-web", 443, TCP, "blocked", "quarantine/isolate-in"),
    ("quarantine isolates outbound", "bad-web", "db-1", 3306, TCP, "blocked", "quarantine/isolate-out"),
    (
        "quarantine keeps forensics",
        "10.77.250.9",
        "bad-web",
        22,
        TCP,
        "allowed",
        "quarantine/allow-forensics-in",
    ),
    ("control plane never blocked", "bad-web", "10.77.0.1", 8440, TCP, "allowed", "system/control-plane"),
    ("control plane only on its port", "db-1", "10.77.0.1", 22, TCP, "blocked", None),
    ("loopback always allowed", "db-1", "db-1", 1, TCP, "allowed", "system/loopback"),
]


@pytest.mark.parametrize(("src", "dst", "port", "proto", "outcome", "ref"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_truth_table(
    crm: engine.PolicyEngine,
    src: str,
    dst: str,
    port: int,
    proto: services.Protocol,
    outcome: str,
    ref: str | None,
) -> None:
    verdict = crm.evaluate(crm.endpoint(src), crm.endpoint(dst), port, proto, at=MAR)
    assert (verdict.outcome.value, verdict.rule) == (outcome, ref), verdict.reason


def test_default_deny_is_explained(crm: engine.PolicyEngine) -> None:
    verdict = crm.evaluate(crm.endpoint("web-1"), crm.endpoint("db-1"), 22, TCP, at=MAR)
    assert verdict.decision is verdicts.Decision.DENY
    assert verdict.tier is None
    assert verdict.reason == "no rule in tiers quarantine, security, application matched; default deny"
    assert verdict.notes == ("passed to the next tier by security/to-app-tier",)


def test_verdict_names_tier_rule_labels_and_modes(crm: engine.PolicyEngine) -> None:
    verdict = crm.evaluate(crm.endpoint("dev-web"), crm.endpoint("db-1"), 3306, TCP, at=MAR)
    assert verdict.tier == "security"
    assert verdict.source_labels_matched == ("env=dev",)
    assert verdict.destination_labels_matched == ("env=prod",)
    assert (verdict.source_mode, verdict.destination_mode) == (Mode.ENFORCE, Mode.ENFORCE)
    assert "dev never reaches prod" in verdict.reason


def test_time_window(crm: engine.PolicyEngine) -> None:
    inside = crm.evaluate(crm.endpoint("bastion"), crm.endpoint("db-1"), 9000, TCP, at=JAN)
    after = crm.evaluate(crm.endpoint("bastion"), crm.endpoint("db-1"), 9000, TCP, at=MAR)
    assert (inside.rule, inside.outcome.value) == ("application/maintenance", "allowed")
    assert (after.rule, after.outcome.value) == (None, "blocked")


@pytest.mark.parametrize(
    ("process", "outcome", "note"),
    [("mysqld", "allowed", False), ("/usr/sbin/mysqld", "allowed", False), ("nc", "blocked", False),
     (None, "allowed", True)],
    ids=["name", "path-basename", "other-process", "unknown-process-noted"],
)  # fmt: skip
def test_process_constraint(crm: engine.PolicyEngine, process: str | None, outcome: str, note: bool) -> None:
    verdict = crm.evaluate(crm.endpoint("web-1"), crm.endpoint("db-1"), 3306, TCP, process=process, at=MAR)
    assert verdict.outcome.value == outcome
    assert any("not checked" in n for n in verdict.notes) == note


def test_quarantine_forces_enforce_mode() -> None:
    est = estate.Estate(
        workloads=(wl("q", "10.77.0.5", "visibility", quarantine="true"), wl("x", "10.77.0.6"))
    )
    eng = engine.PolicyEngine(est)
    verdict = eng.evaluate(eng.endpoint("x"), eng.endpoint("q"), 80, TCP)
    assert (verdict.outcome.value, verdict.rule) == ("blocked", "quarantine/isolate-in")
    assert eng.document("q").mode.value == "enforce"


def test_unknown_ip_list_fails_closed() -> None:
    ghost = rule(
        "ghost", "application", 1, "allow", (sel("role=a"),), (selectors.IpListPeer("nope"),), (HTTP,)
    )
    eng = engine.PolicyEngine(estate.Estate(workloads=(wl("a", "10.77.0.1", role="a"),), rules=(ghost,)))
    verdict = eng.evaluate(eng.endpoint("a"), eng.endpoint("10.77.5.5"), 80, TCP)
    assert verdict.outcome.value == "blocked"
    assert any("unknown ip list 'nope'" in p for p in eng.problems)


def test_unknown_tier_is_ignored_not_allowed() -> None:
    stray = rule("stray", "nosuchtier", 1, "allow", (sel("role=a"),), (sel("role=b"),), (HTTP,))
    ws = (wl("a", "10.77.0.1", role="a"), wl("b", "10.77.0.2", role="b"))
    eng = engine.PolicyEngine(estate.Estate(workloads=ws, rules=(stray,)))
    assert eng.evaluate(eng.endpoint("a"), eng.endpoint("b"), 80, TCP).outcome.value == "blocked"
    assert any("unknown tier" in p for p in eng.problems)


def test_disabled_rule_does_not_match() -> None:
    off = rules.Rule("off", "application", 1, rules.Action.ALLOW, (sel("role=a"),), (sel("role=b"),), (HTTP,),
                     enabled=False)  # fmt: skip
    ws = (wl("a", "10.77.0.1", role="a"), wl("b", "10.77.0.2", role="b"))
    eng = engine.PolicyEngine(estate.Estate(workloads=ws, rules=(off,)))
    assert eng.evaluate(eng.endpoint("a"), eng.endpoint("b"), 80, TCP).outcome.value == "blocked"


@pytest.mark.parametrize(
    "second",
    [wl("b", "10.77.0.1"), wl("b", "10.77.0.0/24", kind="unmanaged")],
    ids=["same-host-address", "cidr-covers-host"],
)
def test_overlapping_workload_addresses_rejected(second: object) -> None:
    with pytest.raises(ValidationError, match="overlaps workload a"):
        engine.PolicyEngine(estate.Estate(workloads=(wl("a", "10.77.0.1"), second)))  # type: ignore[arg-type]


def test_unmanaged_workload_has_no_document(crm: engine.PolicyEngine) -> None:
    with pytest.raises(LookupFailedError, match="unmanaged"):
        crm.document("legacy")
    assert "legacy" not in crm.documents()


def test_endpoint_lookup(crm: engine.PolicyEngine) -> None:
    assert crm.endpoint("10.77.1.20").workload == "db-1"
    assert crm.endpoint("db-1").address == addresses.address("10.77.1.20")
    with pytest.raises(LookupFailedError):
        crm.endpoint("no-such-thing")


def test_each_side_and_each_end_gets_its_own_matched_labels() -> None:
    """The labels a verdict names are remembered per rule, side and profile: one profile on both
    sides of one rule, and two profiles through one rule, each keep their own explanation."""
    web = (
        wl("web-a", "10.77.5.1", app="web", env="prod"),
        wl("web-b", "10.77.5.2", app="web", env="prod"),
        wl("api-a", "10.77.5.3", app="api", env="prod"),
    )
    peers = rule(
        "peers", "application", 1, "allow", (sel("app=web"), sel("app=api")), (sel("env=prod"),), (HTTP,)
    )
    eng = engine.PolicyEngine(estate.Estate(workloads=web, rules=(peers,)))
    first = eng.evaluate(eng.endpoint("web-a"), eng.endpoint("web-b"), 80, TCP)
    again = eng.evaluate(eng.endpoint("web-a"), eng.endpoint("web-b"), 443, TCP)
    other = eng.evaluate(eng.endpoint("api-a"), eng.endpoint("web-b"), 443, TCP)
    for verdict in (first, again):
        assert (verdict.source_labels_matched, verdict.destination_labels_matched) == (
            ("app=web",),
            ("env=prod",),
        )
    assert (other.source_labels_matched, other.destination_labels_matched) == (("app=api",), ("env=prod",))
