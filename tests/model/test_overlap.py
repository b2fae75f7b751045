"""Whether two rules can match one flow (`model.overlap`): exact for label selectors (checked
against every label set of a small universe), address ranges, ports and time windows;
conservative (overlap) for a label selector against addresses and for unknown IP lists."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microseg.model import addresses, iplists, overlap, rules, selectors, services

KEYS = ("a", "b")
VALUES = ("x", "y", "z")
OTHER = "w"
"""A value no requirement names: stands for every such value."""


def sel(text: str) -> selectors.SelectorPeer:
    return selectors.SelectorPeer(selectors.LabelSelector.parse(text))


def cidr(*nets: str, cut: tuple[str, ...] = ()) -> selectors.CidrPeer:
    return selectors.CidrPeer(tuple(map(addresses.network, nets)), tuple(map(addresses.network, cut)))


def port(protocol: str, *ranges: tuple[int, int]) -> services.Service:
    found = tuple(services.PortRange(*r) for r in ranges)
    return services.Service("s", (services.PortSpec(services.Protocol(protocol), found),))


def rule(**overrides: Any) -> rules.Rule:
    fields: dict[str, Any] = {
        "name": "r",
        "tier": "application",
        "priority": 100,
        "action": rules.Action.ALLOW,
        "sources": (selectors.AnyPeer(),),
        "destinations": (selectors.AnyPeer(),),
        "services": (services.ANY_SERVICE,),
    }
    return rules.Rule(**{**fields, **overrides})


LISTS: overlap.IpLists = {
    "corp": iplists.IpList("corp", (addresses.network("10.0.0.0/8"),), (addresses.network("10.9.0.0/16"),)),
    "broken": None,
}

# (id, one peer, other peer, overlap?)
PEERS = [
    ("same-label", sel("env=prod"), sel("env=prod"), True),
    ("other-value", sel("env=prod"), sel("env=dev"), False),
    ("other-key", sel("env=prod"), sel("role=db"), True),
    ("in-and-notin-same-value", sel("env in (a,b)"), sel("env notin (a,b)"), False),
    ("in-and-notin-leave-one", sel("env in (a,b)"), sel("env!=a"), True),
    ("exists-and-absent", sel("env"), sel("!env"), False),
    ("notin-and-absent", sel("env!=prod"), sel("!env"), True),
    ("any", selectors.AnyPeer(), sel("env=prod"), True),
    ("label-and-address", sel("env=prod"), cidr("192.0.2.0/24"), True),
    ("disjoint-cidrs", cidr("10.1.0.0/16"), cidr("10.2.0.0/16"), False),
    ("nested-cidrs", cidr("10.0.0.0/8"), cidr("10.2.3.4/32"), True),
    ("cut-out", cidr("10.0.0.0/8", cut=("10.2.0.0/16",)), cidr("10.2.3.0/24"), False),
    ("v4-and-v6", cidr("0.0.0.0/0"), cidr("::/0"), False),
    ("ip-list-and-cidr", selectors.IpListPeer("corp"), cidr("10.1.0.0/16"), True),
    ("ip-list-cut-out", selectors.IpListPeer("corp"), cidr("10.9.1.0/24"), False),
    ("unknown-ip-list", selectors.IpListPeer("broken"), cidr("192.0.2.0/24"), True),
]  # fmt: skip


@pytest.mark.parametrize(("one", "other", "expected"), [c[1:] for c in PEERS], ids=[c[0] for c in PEERS])
def test_peers(one: selectors.Peer, other: selectors.Peer, expected: bool) -> None:
    assert overlap.peers_overlap(one, other, LISTS) is expected
    assert overlap.peers_overlap(other, one, LISTS) is expected


# (id, one service, other service, overlap?)
SERVICES = [
    ("same-port", port("tcp", (443, 443)), port("tcp", (443, 443)), True),
    ("other-port", port("tcp", (443, 443)), port("tcp", (80, 80)), False),
    ("ranges-touch", port("tcp", (80, 90)), port("tcp", (90, 100)), True),
    ("other-protocol", port("tcp", (53, 53)), port("udp", (53, 53)), False),
    ("all-ports", port("udp"), port("udp", (53, 53)), True),
    ("any-protocol", services.ANY_SERVICE, port("icmp"), True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("one", "other", "expected"), [c[1:] for c in SERVICES], ids=[c[0] for c in SERVICES]
)
def test_services(one: services.Service, other: services.Service, expected: bool) -> None:
    assert overlap.services_overlap((one,), (other,)) is expected


def test_time_windows_that_do_not_meet_cannot_both_match() -> None:
    jan, feb, mar = (datetime(2026, m, 1, tzinfo=UTC) for m in (1, 2, 3))
    january = rule(not_before=jan, not_after=feb)
    assert not overlap.rules_overlap(january, rule(not_before=feb), {})
    assert overlap.rules_overlap(january, rule(not_after=mar), {})


def test_a_rule_overlaps_only_when_every_part_does() -> None:
    web = rule(destinations=(sel("role=web"),), services=(port("tcp", (443, 443)),))
    assert overlap.rules_overlap(web, rule(), {})
    assert not overlap.rules_overlap(web, rule(destinations=(sel("role=db"),)), {})
    assert not overlap.rules_overlap(web, rule(services=(port("tcp", (80, 80)),)), {})
    v4_web = rule(sources=(cidr("10.0.0.0/8"),), destinations=(sel("role=web"),))
    assert not overlap.rules_overlap(v4_web, rule(sources=(cidr("::/0"),)), {})


requirement = st.builds(
    selectors.Requirement,
    st.sampled_from(KEYS),
    st.sampled_from([selectors.Operator.EXISTS, selectors.Operator.DOES_NOT_EXIST]),
) | st.builds(
    selectors.Requirement,
    st.sampled_from(KEYS),
    st.sampled_from([selectors.Operator.IN, selectors.Operator.NOT_IN]),
    st.lists(st.sampled_from(VALUES), min_size=1, max_size=3).map(tuple),
)
label_selector = st.lists(requirement, max_size=4).map(lambda reqs: selectors.LabelSelector(tuple(reqs)))


def _label_sets() -> list[dict[str, str]]:
    choices = [None, *VALUES, OTHER]
    return [
        {k: v for k, v in zip(KEYS, values, strict=True) if v is not None}
        for values in itertools.product(choices, repeat=len(KEYS))
    ]


@given(label_selector, label_selector)
def test_selector_overlap_is_exact(one: selectors.LabelSelector, other: selectors.LabelSelector) -> None:
    both = any(one.matches(labels) and other.matches(labels) for labels in _label_sets())
    assert overlap.selectors_overlap(one, other) is both
