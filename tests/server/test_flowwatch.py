"""The invariant check of flow ingest remembers lookups within a batch (`flowwatch.BatchGuard`):
whatever the batch, it names exactly the invariants the plain `invariants.Guard` names for each
connection, asked afresh. Invariants with selector, `any`, IP-list and CIDR peers, on both sides."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microseg import errors
from microseg.cli import loading
from microseg.engine import invariants
from microseg.engine.engine import PolicyEngine
from microseg.model import addresses, selectors, services
from microseg.model import invariants as model
from microseg.server import flowwatch

ADDRESSES = ["10.77.4.2", "10.77.2.21", "10.77.2.11", "10.77.1.31", "10.77.1.11", "10.77.3.53",
             "10.77.200.5", "10.77.200.77", "10.77.250.1", "10.77.9.50", "10.77.77.77", "192.0.2.1",
             "2001:db8::1"]  # fmt: skip
"""Workloads' own (bastion, dev, prod, dns), IP-list members and a cut-out, CIDR ones, strangers."""


@pytest.fixture(scope="module")
def eng() -> PolicyEngine:
    """The example estate (two invariants by labels) plus two by address: corp users never reach
    production, and only the forensics CIDR reaches the infrastructure subnet."""
    est = loading.load(None, example=True)
    anything = est.invariants[0].services
    prod = est.invariants[0].destinations
    by_list = model.Invariant("corp-never-prod", model.Shape.NEVER, (selectors.IpListPeer("corp-users"),),
                              prod, anything)  # fmt: skip
    by_cidr = model.Invariant("only-forensics-infra", model.Shape.ONLY,
                              (selectors.CidrPeer((addresses.network("10.77.250.0/24"),)),),
                              (selectors.CidrPeer((addresses.network("10.77.3.0/24"),)),), anything)  # fmt: skip
    return PolicyEngine(dataclasses.replace(est, invariants=(*est.invariants, by_list, by_cidr)))


def afresh(eng: PolicyEngine, src: str, dst: str, port: int | None, proto: str) -> list[str]:
    """What the plain Guard says, every lookup made anew."""
    guard = invariants.Guard(eng)
    try:
        ends = eng.endpoint(src), eng.endpoint(dst)
    except errors.LookupFailedError:
        return []
    return [i.name for i in guard.broken_by_flow(*ends, port, services.Protocol(proto))]


Connection = tuple[str, str, bool, int | None, str]
"""(own address, peer address, outgoing, port, protocol): a record as its reporter sees it."""
connection = st.tuples(st.sampled_from(ADDRESSES), st.sampled_from([*ADDRESSES, "not-an-address"]), st.booleans(),
                       st.sampled_from([None, 22, 53, 443, 3306]), st.sampled_from(["tcp", "udp", "icmp"]))  # fmt: skip


def fresh_answer(eng: PolicyEngine, c: Connection) -> list[str]:
    own, peer, outgoing, port, proto = c
    return afresh(eng, own, peer, port, proto) if outgoing else afresh(eng, peer, own, port, proto)


@settings(max_examples=150, deadline=None)
@given(own=st.sampled_from(ADDRESSES), batch=st.lists(connection, max_size=40))
def test_a_batch_guard_names_what_a_fresh_guard_names(
    eng: PolicyEngine, own: str, batch: list[Connection]
) -> None:
    """One reporter's batch (one own address, as ingest keeps them), and one mixing many."""
    for connections in ([(own, *c[1:]) for c in batch], batch):
        guard = flowwatch.BatchGuard(eng)
        assert [guard.broken(*c) for c in connections] == [fresh_answer(eng, c) for c in connections]


def test_every_kind_of_invariant_is_broken_somewhere(eng: PolicyEngine) -> None:
    """The truth table above is not vacuous: each invariant is broken by some connection, seen
    from either end."""
    for outgoing in (True, False):
        guard = flowwatch.BatchGuard(eng)
        seen = {
            name for s in ADDRESSES for d in ADDRESSES for name in guard.broken(s, d, outgoing, 22, "tcp")
        }
        assert seen == {
            "dev-never-reaches-prod",
            "only-bastion-ssh",
            "corp-never-prod",
            "only-forensics-infra",
        }


def test_the_watch_tells_each_broken_invariant_once_per_batch(eng: PolicyEngine) -> None:
    record = {"direction": "out", "src": "10.77.2.11", "dst": "10.77.1.31", "dport": 3306, "proto": "tcp",
              "first_seen": 1.0, "last_seen": 2.0, "verdict": "allowed"}  # fmt: skip
    batch: list[Any] = [record, record, {**record, "dport": 22}]
    told = flowwatch.Watch().events(eng, threading.Lock(), "dev-web-1", batch)
    counts = {e["details"]["invariant"]: e["details"]["count"] for e in told}
    assert counts == {"dev-never-reaches-prod": 2, "only-bastion-ssh": 1}
