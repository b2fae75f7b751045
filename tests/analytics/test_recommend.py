"""Recommendations: least-privilege rules from flows, measured coverage, and what is left out."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from microseg import policyfile
from microseg.analytics import recommend
from microseg.engine import engine
from microseg.errors import ValidationError
from microseg.model import addresses, estate, iplists, labels, rules, selectors, services, workloads
from microseg.policyfile import dumper
from tests.analytics import (
    APP1,
    CORP_USER,
    DB1,
    DEV_APP,
    LB1,
    OUTSIDE,
    WEB1,
    example_engine,
    example_estate,
    hour_of_traffic,
    row,
)
from tests.engine import estates as engine_estates

FULL = ("env", "app", "role")


def no_rules_engine() -> engine.PolicyEngine:
    """The example inventory before anyone wrote a rule."""
    return engine.PolicyEngine(replace(example_estate(), rules=()))


def selector_text(peer: selectors.Peer) -> str:
    assert isinstance(peer, selectors.SelectorPeer)
    return str(peer.selector)


def by_name(rec: recommend.Recommendation) -> dict[str, rules.Rule]:
    return {r.name: r for r in rec.rules}


def test_from_nothing_every_observed_flow_is_covered_at_the_chosen_granularity() -> None:
    rec = recommend.recommend(hour_of_traffic(), no_rules_engine(), FULL)
    # every flow that went through is covered; dev -> db was blocked when seen, so it is not learnt
    assert (rec.flows, rec.covered, round(rec.coverage, 1)) == (6, 5, 83.3)
    (left,) = rec.left_out
    assert "3306/tcp" in left.flow and "blocked when seen" in left.reason
    rule = by_name(rec)["rec-prod-crm-web-to-prod-crm-app"]
    assert [selector_text(p) for p in rule.sources] == ["app=crm,env=prod,role=web"]
    assert [selector_text(p) for p in rule.destinations] == ["app=crm,env=prod,role=app"]
    # java served 8443 on the destination: the service is pinned to it
    (svc,) = rule.services
    assert (str(svc.specs[0]), svc.process) == ("8443/tcp", "java")


def test_peers_are_ip_lists_exact_addresses_and_selectors_for_unmanaged_never_any() -> None:
    rec = recommend.recommend(hour_of_traffic(), no_rules_engine(), FULL)
    rules_ = by_name(rec)
    assert rules_["rec-corp-users-to-prod-crm-lb"].sources == (selectors.IpListPeer("corp-users"),)
    assert rules_["rec-prod-crm-app-to-addresses"].destinations == (
        selectors.CidrPeer((addresses.network(OUTSIDE + "/32"),)),
    )
    billing = rules_["rec-prod-crm-app-to-prod-billing"]
    # legacy-billing has no app label: the selector says so instead of matching every app
    assert selector_text(billing.destinations[0]) == "!app,env=prod,role=billing"
    # the appliance has no agent, so no serving process was seen: the port alone
    assert billing.services == (services.Service("inline:5000/tcp", (services.PortSpec(
        services.Protocol.TCP, (services.PortRange(5000, 5000),)),)),)  # fmt: skip
    for rule in rec.rules:
        assert rule.action is rules.Action.ALLOW and rule.tier == "application"
        assert not any(isinstance(p, selectors.AnyPeer) for p in (*rule.sources, *rule.destinations))
        assert services.ANY_SERVICE not in rule.services


def test_two_serving_processes_on_one_port_leave_the_port_unpinned() -> None:
    rows = [
        row("prod-app-1", "in", WEB1, APP1, 8443, process="java"),
        row("prod-app-2", "in", "10.77.1.12", "10.77.1.22", 8443, process="node"),
    ]
    (rule,) = recommend.recommend(rows, no_rules_engine(), ("role",)).rules
    assert [(s.name, s.process) for s in rule.services] == [("inline:8443/tcp", None)]


def test_processes_with_the_same_slug_get_distinct_services_that_still_dump() -> None:
    rows = [
        row("prod-app-1", "in", WEB1, APP1, 8443, process="Java"),
        row("prod-db-1", "in", APP1, DB1, 8443, process="java"),
    ]
    rec = recommend.recommend(rows, no_rules_engine(), ("role",))
    # rules come in selector order (app->db first), so lower-case java mints the name first
    assert [(s.name, s.process) for s in rec.services] == [
        ("rec-8443-tcp-java", "java"),
        ("rec-8443-tcp-java-2", "Java"),
    ]
    assert [d["metadata"]["name"] for d in rec.documents] == [
        "rec-8443-tcp-java",
        "rec-8443-tcp-java-2",
        "recommended",
    ]
    assert rec.coverage == 100.0


def test_flows_the_policy_already_allows_get_no_rule() -> None:
    allowed = [r for r in hour_of_traffic() if r["verdict"] == "allowed" and r["dst"] not in (OUTSIDE, DB1)]
    rec = recommend.recommend(allowed, example_engine(), ("app", "role"))
    assert (rec.rules, rec.documents, rec.coverage) == ((), (), 100.0)


def test_a_flow_an_explicit_deny_stops_is_left_out_with_that_rule_and_gets_no_rule() -> None:
    rec = recommend.recommend(hour_of_traffic(), example_engine(), ("app", "role"))
    (left,) = rec.left_out
    assert left.flow.startswith(f"dev-app-1 ({DEV_APP}) -> prod-db-1 ({DB1})")
    assert "security/dev-never-reaches-prod" in left.reason
    assert rec.coverage == pytest.approx(100 * 5 / 6)
    assert rec.connection_coverage == pytest.approx(100 * 26 / 27)
    assert [r.name for r in rec.rules] == ["rec-crm-app-to-addresses"]


@pytest.mark.parametrize(
    ("flow", "reason"),
    [
        (row("prod-lb-1", "in", CORP_USER, LB1, None, proto="other"), "protocol 'other'"),
        (row("prod-lb-1", "in", CORP_USER, LB1, None), "no destination port"),
        (row("x", "out", CORP_USER, OUTSIDE, 443), "neither end is a workload"),
        (row("dns-1", "in", WEB1, "10.77.3.53", 53, proto="udp"), "dns-1 has none of the labels app"),
    ],
    ids=["other-protocol", "no-port", "no-workload", "unlabelled"],
)
def test_flows_no_rule_can_be_written_for_are_left_out_with_why(flow: dict[str, object], reason: str) -> None:
    rec = recommend.recommend([flow], no_rules_engine(), ("app",))
    (left,) = rec.left_out
    assert reason in left.reason
    assert (rec.rules, rec.coverage) == ((), 0.0)


def test_icmp_becomes_a_protocol_without_ports() -> None:
    rows = [row("prod-app-1", "in", WEB1, APP1, None, proto="icmp")]
    (rule,) = recommend.recommend(rows, no_rules_engine(), ("role",)).rules
    assert rule.services == (services.Service("inline:icmp/*", (services.PortSpec(services.Protocol.ICMP),)),)


def test_no_group_by_keys_is_refused() -> None:
    with pytest.raises(ValidationError, match="group-by"):
        recommend.recommend(hour_of_traffic(), no_rules_engine(), ())


def test_names_and_priorities_do_not_collide_with_the_draft() -> None:
    base = example_estate()
    squatter = replace(base.rules[0], name="rec-web-to-app", tier="application", priority=900, policy="")
    eng = engine.PolicyEngine(replace(base, rules=(*base.rules, squatter)))
    rows = [row("prod-app-1", "in", WEB1, APP1, 22, process="sshd"), row("r", "in", WEB1, APP1, 23)]
    (rule,) = recommend.recommend(rows, eng, ("role",)).rules
    assert (rule.name, rule.priority) == ("rec-web-to-app-2", 910)
    assert [str(s) for s in rule.services] == ["22/tcp (process sshd)", "23/tcp"]


def test_documents_load_as_policy_files_into_the_same_rules() -> None:
    base = no_rules_engine().estate
    rec = recommend.recommend(hour_of_traffic(), no_rules_engine(), FULL)
    kinds = [d["kind"] for d in rec.documents]
    assert kinds == ["Service", "Service", "Policy"]
    assert all(d["apiVersion"] == "microseg.io/v1" for d in rec.documents)
    text = yaml.safe_dump_all([*dumper.documents(base), *rec.documents], sort_keys=False)
    loaded = policyfile.load_text(text)
    assert {r.ref: r for r in loaded.rules} == {r.ref: r for r in rec.rules}
    # priorities are unique, as the loader demands
    assert len({r.priority for r in rec.rules}) == len(rec.rules)


# -- property: a recommendation covers the flows it was built from ----------------------------

APP_VALUES, ROLE_VALUES = ("a", "b"), ("x", "y", "z")
LIST_ADDRESS, OUTSIDE_ADDRESSES = "10.77.5.9", ("198.51.100.4", "2001:db8::7")


@st.composite
def inventories(draw: st.DrawFn) -> estate.Estate:
    """Workloads labelled with app and role, IP lists, and allow rules in the application tier only."""
    count = draw(st.integers(1, 6))
    ws = tuple(
        workloads.Workload(
            f"w{i}",
            addresses=(addresses.network(f"10.77.0.{i + 1}"),),
            labels=labels.Labels({"app": draw(st.sampled_from(APP_VALUES)), "role": draw(st.sampled_from(ROLE_VALUES))}),
            mode=draw(st.sampled_from(list(workloads.Mode))),
            kind=draw(st.sampled_from((workloads.WorkloadKind.VM, workloads.WorkloadKind.UNMANAGED))),
        )
        for i in range(count)
    )  # fmt: skip
    # nothing denies in a higher tier, and no application rule denies before the proposal
    existing = tuple(
        replace(r, tier="application", action=rules.Action.ALLOW) for r in draw(engine_estates.rule_lists())
    )
    lists = (
        iplists.IpList("l1", (addresses.network("10.77.5.0/24"),)),
        iplists.IpList("l2", (addresses.network("10.77.6.0/24"),)),
    )
    return estate.Estate(workloads=ws, rules=existing, ip_lists=lists)  # fmt: skip


@st.composite
def summary_rows(draw: st.DrawFn, est: estate.Estate) -> list[dict[str, object]]:
    """Rows with at least one workload end, a port where the protocol has ports; few ports and
    processes, so that flows often share a rule and a port (with or without one serving process)."""
    inside = [str(w.addresses[0].network_address) for w in est.workloads]
    anywhere = st.sampled_from([*inside, LIST_ADDRESS, *OUTSIDE_ADDRESSES])
    out = []
    for _ in range(draw(st.integers(1, 16))):
        workload_end, other = draw(st.sampled_from(inside)), draw(anywhere)
        src, dst = (workload_end, other) if draw(st.booleans()) else (other, workload_end)
        proto = draw(st.sampled_from(("tcp", "tcp", "udp", "sctp", "icmp")))
        port = None if proto == "icmp" else draw(st.sampled_from((22, 443, 3306)))
        out.append(
            row("reporter", draw(st.sampled_from(("in", "out"))), src, dst, port, proto=proto,
                process=draw(st.sampled_from((None, "nginx", "mysqld", "java"))),
                connections=draw(st.integers(0, 5)), bucket=draw(st.sampled_from((0.0, 3600.0))))
        )  # fmt: skip
    return out


@settings(max_examples=80, deadline=None)
@given(st.data(), st.sampled_from((("app",), ("role",), ("app", "role"))))
def test_a_recommendation_covers_every_flow_it_was_built_from(
    data: st.DataObject, group_by: tuple[str, ...]
) -> None:
    est = data.draw(inventories())
    rows = data.draw(summary_rows(est))
    rec = recommend.recommend(rows, engine.PolicyEngine(est), group_by)
    assert rec.left_out == ()
    assert rec.coverage == 100.0
    assert len({r.name for r in rec.rules}) == len({r.priority for r in rec.rules}) == len(rec.rules)
    for rule in rec.rules:
        assert not any(isinstance(p, selectors.AnyPeer) for p in (*rule.sources, *rule.destinations))
