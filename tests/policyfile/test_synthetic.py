"""Synthetic estates: deterministic for a seed, exactly the sizes asked for, valid as policy files,
and varied enough to exercise every kind of peer, selector operator, action and service."""

from __future__ import annotations

import collections
import ipaddress

import pytest

from microseg.model import estate, rules, selectors, services, workloads
from microseg.policyfile import canonical, synthetic


@pytest.fixture(scope="module")
def est() -> estate.Estate:
    return synthetic.generate(2_000, 200, 1_000, seed=11)


def test_same_seed_same_estate_other_seed_other_estate() -> None:
    assert synthetic.generate(500, 50, 200, seed=7) == synthetic.generate(500, 50, 200, seed=7)
    assert synthetic.generate(500, 50, 200, seed=7) != synthetic.generate(500, 50, 200, seed=8)


@pytest.mark.parametrize(
    ("count", "label_sets", "rule_count"),
    [(1, 1, 0), (10, 10, 1), (1_000, 50, 100), (3_000, 500, 2_000)],
    ids=["one", "one-workload-per-label-set", "few-label-sets", "many"],
)
def test_exactly_the_sizes_asked_for(count: int, label_sets: int, rule_count: int) -> None:
    est = synthetic.generate(count, label_sets, rule_count)
    assert len(est.workloads) == count and len(est.rules) == rule_count
    assert len({w.labels for w in est.workloads}) == label_sets
    spread = collections.Counter(w.labels for w in est.workloads).values()
    assert max(spread) - min(spread) <= 1  # evenly


def test_addresses_are_unique_and_start_in_the_lab_range(est: estate.Estate) -> None:
    addrs = sorted(int(w.addresses[0].network_address) for w in est.workloads)
    assert len(set(addrs)) == len(addrs) == len(est.workloads)
    assert addrs[0] == int(ipaddress.IPv4Address("10.77.0.1")) and addrs[-1] == addrs[0] + len(addrs) - 1


def test_past_65k_workloads_addresses_continue_in_10_78() -> None:
    est = synthetic.generate(65_600, 3, 0)
    last = max(w.addresses[0] for w in est.workloads)
    assert last.subnet_of(ipaddress.IPv4Network("10.78.0.0/16"))  # type: ignore[arg-type]


def test_rules_are_unique_in_their_tier_and_the_estate_is_canonical(est: estate.Estate) -> None:
    assert {r.tier for r in est.rules} == {"security", "application"}
    assert len({(r.tier, r.priority) for r in est.rules}) == len(est.rules)
    assert len({(r.tier, r.name) for r in est.rules}) == len(est.rules)
    assert canonical.ordered(est) == est


def test_rules_are_varied(est: estate.Estate) -> None:
    peers = [p for r in est.rules for p in (*r.sources, *r.destinations)]
    kinds = {type(p) for p in peers}
    assert kinds == {selectors.SelectorPeer, selectors.IpListPeer, selectors.CidrPeer, selectors.AnyPeer}
    assert any(isinstance(p, selectors.CidrPeer) and p.excepts for p in peers)
    operators = {
        q.operator for p in peers if isinstance(p, selectors.SelectorPeer) for q in p.selector.requirements
    }
    assert operators == set(selectors.Operator)
    assert {r.action for r in est.rules} == set(rules.Action)
    assert any(not r.enabled for r in est.rules) and any(r.not_after for r in est.rules)
    used = {s for r in est.rules for s in r.services}
    assert services.ANY_SERVICE in used and any(canonical.is_inline(s) for s in used)
    assert any(s.process for s in used) and any(
        sp.protocol is services.Protocol.UDP for s in used for sp in s.specs
    )


def test_selectors_match_workloads(est: estate.Estate) -> None:
    labelsets = {w.labels for w in est.workloads}
    selector_peers = [p for r in est.rules for p in r.destinations if isinstance(p, selectors.SelectorPeer)]
    matching = [p for p in selector_peers if any(p.selector.matches(ls) for ls in labelsets)]
    assert len(matching) == len(selector_peers)


def test_ip_lists_and_settings_are_consistent(est: estate.Estate) -> None:
    names = {i.name for i in est.ip_lists}
    assert {
        p.name
        for r in est.rules
        for p in (*r.sources, *r.destinations)
        if isinstance(p, selectors.IpListPeer)
    } <= names
    assert est.quarantine_allow in names and est.control_plane
    assert {w.kind for w in est.workloads} == set(workloads.WorkloadKind)
    assert {w.mode for w in est.workloads} == set(workloads.Mode)


@pytest.mark.parametrize(
    ("count", "label_sets", "rule_count", "words"),
    [
        (10, 0, 5, "label_sets"),
        (10, 11, 5, "label_sets"),
        (10, 5, -1, "negative"),
        (12_000_000, 5, 0, "do not fit"),
    ],
    ids=["no-label-sets", "more-label-sets-than-workloads", "negative-rules", "too-many-workloads"],
)
def test_impossible_sizes_are_refused(count: int, label_sets: int, rule_count: int, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        synthetic.generate(count, label_sets, rule_count)
