"""The linter: each kind of finding on a hand-written estate, no false alarms on the example estate,
and, for random estates, that a rule reported as never deciding indeed never decides.

Also the compiler fix it brought: a host's document carries no entry that can never match there
(an IP-list or CIDR rule side that none of its addresses is in).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest
from hypothesis import given, settings

from microseg import policyfile
from microseg.cli import loading
from microseg.engine import coverage, engine, lint
from microseg.model import addresses, estate, rules, services, verdicts
from tests.engine.estates import REFERENCE_TIME, TCP, UDP, WINDOW_EDGES, estates, rule, sel, svc, wl
from tests.engine.shop_estate import EXPECTED, SHOP

NEVER_DECIDING = {lint.Kind.SHADOWED, lint.Kind.REDUNDANT, lint.Kind.ALLOW_UNDER_DENY}


@pytest.fixture(scope="module")
def shop() -> engine.PolicyEngine:
    return engine.PolicyEngine(policyfile.load_text(SHOP))


def by_name(found: list[lint.Finding]) -> dict[tuple[str, str], lint.Finding]:
    return {(f.kind.value, f.name): f for f in found}


def test_the_shop_estate_gives_exactly_its_findings(shop: engine.PolicyEngine) -> None:
    assert set(by_name(lint.lint(shop))) == EXPECTED


@pytest.mark.parametrize(
    ("rule_ref", "field", "hint"),
    [
        ("application/web-to-cache", "to", "did you mean role=cache?"),
        ("application/prd-to-db", "from", "did you mean env=prod,role=web?"),
    ],
    ids=["typo-in-key", "typo-in-value"],
)
def test_selectors_matching_nothing_suggest_the_labels_in_use(
    shop: engine.PolicyEngine, rule_ref: str, field: str, hint: str
) -> None:
    found = by_name(lint.lint(shop))[("selector-matches-nothing", rule_ref)]
    assert (found.field, found.hint) == (field, hint)


def test_no_suggestion_when_nothing_close_is_in_use() -> None:
    est = estate.Estate(
        workloads=(wl("a", "10.0.0.1", env="prod"), wl("b", "10.0.0.2", env="prod")),
        rules=(
            rule(
                "x", "application", 1, "allow", (sel("zzzzz=qqq"),), (sel("env=prod"),), (svc("s", TCP, 1),)
            ),
        ),
    )
    [found] = [f for f in lint.lint(engine.PolicyEngine(est)) if f.kind is lint.Kind.NO_MATCH]
    assert found.hint == "" and "no workload has a label `zzzzz`" in found.message


def test_shadowing_names_the_rules_that_decide_instead(shop: engine.PolicyEngine) -> None:
    found = by_name(lint.lint(shop))
    assert found[("redundant", "application/web-to-db-again")].related == ("application/web-to-db",)
    assert found[("allow-under-deny", "application/dev-web-to-db")].related == ("security/dev-never-prod",)
    shadowed = found[("shadowed", "application/web-to-db-admin")]
    assert set(shadowed.related) == {"application/web-to-db", "application/web-no-ssh-db"}


def two_rules(first: rules.Rule, second: rules.Rule) -> list[lint.Finding]:
    est = estate.Estate(
        workloads=(wl("web", "10.0.0.1", role="web"), wl("db", "10.0.0.2", role="db")),
        rules=(first, second),
    )
    return [f for f in lint.lint(engine.PolicyEngine(est)) if f.kind in NEVER_DECIDING]


WEB, DB = (sel("role=web"),), (sel("role=db"),)


@pytest.mark.parametrize(
    "first",
    [
        rule("a", "application", 1, "allow", WEB, DB, (svc("mysql", TCP, 3306, process="mysqld"),)),
        rule("a", "application", 1, "allow", WEB, DB, (svc("mysql", TCP, 3306),),
             not_before=datetime(2026, 1, 1, tzinfo=REFERENCE_TIME.tzinfo)),
        rule("a", "application", 1, "allow", WEB, DB, (svc("mysql", TCP, 3306),)),
        rule("a", "application", 1, "allow", WEB, (*DB, sel("role=none")), (svc("some", TCP, 3306, 3307),)),
    ],
    ids=["process-bound", "timed", "fewer-ports", "other-port-left"],
)  # fmt: skip
def test_a_rule_that_still_decides_something_is_not_reported(first: rules.Rule) -> None:
    second = rule("b", "application", 2, "allow", WEB, DB, (svc("wide", TCP, 3306, 3308),))
    assert two_rules(first, second) == []


def test_a_pass_above_shadows_the_rest_of_its_tier() -> None:
    first = rule("a", "application", 1, "pass", WEB, DB, (services.ANY_SERVICE,))
    second = rule("b", "application", 2, "allow", WEB, DB, (svc("mysql", TCP, 3306),))
    [found] = two_rules(first, second)
    assert (found.kind, found.related) == (lint.Kind.SHADOWED, ("application/a",))


def test_a_policy_too_large_for_the_step_budget_says_the_analysis_is_partial(
    shop: engine.PolicyEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coverage, "MAX_STEPS", 3)
    found = {f.kind for f in lint.lint(shop)}
    assert lint.Kind.PARTIAL in found and not found & {lint.Kind.NEVER_MATCHES, *NEVER_DECIDING}


def test_the_example_estate_is_clean() -> None:
    assert lint.lint(loading.build(None, example=True)) == []


def test_the_shop_db_document_carries_no_rule_it_can_never_match(shop: engine.PolicyEngine) -> None:
    """`internet-to-web` comes from outside 10/8: shop-db-1 (10.20.1.31) can never be its source,
    so its egress does not carry it; the web servers' ingress does."""
    db_refs = {e.ref for e in shop.document("shop-db-1").egress}
    assert "application/internet-to-web" not in db_refs
    assert "application/internet-to-web" in {e.ref for e in shop.document("shop-web-1").ingress}
    assert "application/web-to-db" in {e.ref for e in shop.document("shop-db-1").ingress}


def test_a_workload_moved_into_an_ip_list_gains_its_entries_and_loses_them_moving_out() -> None:
    """Incremental: a re-address changes which entries the workload's document carries."""
    eng = engine.PolicyEngine(policyfile.load_text(SHOP))
    db = eng.workload("shop-db-1")
    outside = "application/partners-to-outside"
    assert outside not in {e.ref for e in eng.document("shop-db-1").egress}
    delta = eng.upsert_workload(dataclasses.replace(db, addresses=(addresses.network("198.51.100.5"),)))
    assert "shop-db-1" in delta.workloads
    assert outside in {e.ref for e in eng.document("shop-db-1").egress}
    eng.upsert_workload(db)
    assert outside not in {e.ref for e in eng.document("shop-db-1").egress}


@settings(max_examples=120, deadline=None)
@given(estates())
def test_documents_carry_only_entries_that_can_match_on_their_host(est: estate.Estate) -> None:
    eng = engine.PolicyEngine(est)
    sets = eng.book.static_sets
    for name, doc in eng.documents().items():
        own = eng.workload(name).addresses
        for entry in (*doc.ingress, *doc.egress):
            if entry.local_sets is not None:
                held = [n for s in entry.local_sets for n in sets[s].networks]
                assert any(n.overlaps(a) for n in held for a in own if n.version == a.version), entry.ref


PROBES = ((80, TCP), (443, TCP), (3306, TCP), (22, TCP), (53, UDP), (53, TCP), (8000, TCP), (8440, TCP),
          (None, services.Protocol.ICMP), (7, services.Protocol.SCTP))  # fmt: skip
MOMENTS = (
    REFERENCE_TIME,
    *(m for m in WINDOW_EDGES if m is not None),
    datetime(2027, 1, 1, tzinfo=REFERENCE_TIME.tzinfo),
)


def class_representatives(eng: engine.PolicyEngine) -> list[verdicts.Endpoint]:
    """Two endpoints per class of the evaluator over 10.77.0.0/24 and an outside address."""
    found: dict[object, list[verdicts.Endpoint]] = {}
    candidates = [eng.endpoint(f"10.77.0.{i}") for i in range(256)] + [eng.endpoint("203.0.113.9")]
    for end in candidates:
        members = found.setdefault(eng.evaluator.equivalence_key(end), [])
        if len(members) < 2:
            members.append(end)
    return [e for members in found.values() for e in members]


@settings(max_examples=120, deadline=None)
@given(estates())
def test_a_rule_reported_as_never_deciding_never_decides(est: estate.Estate) -> None:
    """Against the one evaluator, at every time-window edge, for an unknown and for any other
    process: the rule is never the deciding one."""
    eng = engine.PolicyEngine(est)
    silent = {f.name for f in lint.lint(eng) if f.kind in NEVER_DECIDING}
    if not silent:
        return
    ends = class_representatives(eng)
    for src in ends:
        for dst in ends:
            for port, proto in PROBES:
                for moment in MOMENTS:
                    for process in (None, "some-other-process"):
                        verdict = eng.evaluate(src, dst, port, proto, at=moment, process=process)
                        assert verdict.rule not in silent, (verdict.reason, src, dst, port, moment)


def test_coverage_cuts_addresses_at_every_network_edge() -> None:
    """A wide CIDR deny above a narrow allow covers only part of the wide range's complement: the
    allow from a /24 inside the /8 is shadowed; the allow from 10.0.0.0/8 (beyond the /24) is not."""
    narrow = addresses.network("10.1.2.0/24")
    wide = addresses.network("10.0.0.0/8")
    from microseg.model import selectors

    est = estate.Estate(
        workloads=(wl("db", "10.9.9.9", role="db"),),
        rules=(
            rule("deny-narrow", "application", 1, "deny", (selectors.CidrPeer((narrow,)),), DB, (services.ANY_SERVICE,)),
            rule("allow-wide", "application", 2, "allow", (selectors.CidrPeer((wide,)),), DB, (services.ANY_SERVICE,)),
            rule("allow-narrow", "application", 3, "allow", (selectors.CidrPeer((narrow,)),), DB, (services.ANY_SERVICE,)),
        ),
    )  # fmt: skip
    found = {(f.kind, f.name) for f in lint.lint(engine.PolicyEngine(est)) if f.kind in NEVER_DECIDING}
    assert found == {(lint.Kind.ALLOW_UNDER_DENY, "application/allow-narrow")}
