"""Whether two rules can match one flow: the test behind "equal priorities are fine where the
order cannot change an outcome".

Inside a tier, rules with one priority are tried by name. That order decides a flow only when the
flow matches two of them and they act differently; `rules_overlap` says whether such a flow can
exist, over every inventory (workloads come and go; a policy that is unambiguous today must stay so).

Exact where the model alone decides, conservative (overlap) where it cannot:

- sides: label selectors are compared by satisfiability (is there a label set both match, key by
  key, with Kubernetes semantics: NotIn and DoesNotExist hold for an absent key); CIDRs and IP
  lists by their address ranges (exceptions cut out); a label selector and an address peer
  always may overlap (a workload with those labels may have that address); `any` overlaps all;
- services: protocol and port ranges (`any` overlaps every protocol; no ports is every port);
  process and user constraints are not compared (two globs may match one executable);
- time windows: `notBefore`/`notAfter` intervals that do not meet cannot both hold;
- `enabled` is ignored: turning a rule on must not create an ambiguity nobody checked.

Fed by `policyfile.checks` (files, and the server's draft through the same loader); does not know
tiers or priorities.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from microseg.model import addresses, iplists, selectors, services
from microseg.model.rules import Rule

IpLists = Mapping[str, iplists.IpList | None]
"""IP lists by name; None (or missing): unknown or broken, so it may hold any address."""


def rules_overlap(one: Rule, other: Rule, ip_lists: IpLists) -> bool:
    """Whether some flow, at some time, can match both rules."""
    return (
        _windows_meet(one, other)
        and sides_overlap(one.sources, other.sources, ip_lists)
        and sides_overlap(one.destinations, other.destinations, ip_lists)
        and services_overlap(one.services, other.services)
    )


def sides_overlap(one: Iterable[selectors.Peer], other: Iterable[selectors.Peer], ip_lists: IpLists) -> bool:
    """Whether one rule side and another can name one endpoint."""
    theirs = tuple(other)
    return any(peers_overlap(a, b, ip_lists) for a in one for b in theirs)


def peers_overlap(one: selectors.Peer, other: selectors.Peer, ip_lists: IpLists) -> bool:
    """Whether two peers can name one endpoint (see the module docstring)."""
    if isinstance(one, selectors.AnyPeer) or isinstance(other, selectors.AnyPeer):
        return True
    if isinstance(one, selectors.SelectorPeer) and isinstance(other, selectors.SelectorPeer):
        return selectors_overlap(one.selector, other.selector)
    if isinstance(one, selectors.SelectorPeer) or isinstance(other, selectors.SelectorPeer):
        return True
    mine, theirs = _networks(one, ip_lists), _networks(other, ip_lists)
    if mine is None or theirs is None:
        return True
    return any(a.version == b.version and a.overlaps(b) for a in mine for b in theirs)


def selectors_overlap(one: selectors.LabelSelector, other: selectors.LabelSelector) -> bool:
    """Whether some label set matches both selectors: each key's requirements can hold at once."""
    by_key: dict[str, list[selectors.Requirement]] = {}
    for req in (*one.requirements, *other.requirements):
        by_key.setdefault(req.key, []).append(req)
    return all(_key_satisfiable(reqs) for reqs in by_key.values())


def _key_satisfiable(reqs: list[selectors.Requirement]) -> bool:
    """Whether one key can be absent, or carry one value, so that every requirement holds."""
    ops = {r.operator for r in reqs}
    absent_ok = not ops & {selectors.Operator.IN, selectors.Operator.EXISTS}
    if absent_ok:
        return True
    if selectors.Operator.DOES_NOT_EXIST in ops:
        return False
    excluded = {v for r in reqs if r.operator is selectors.Operator.NOT_IN for v in r.values}
    allowed: set[str] | None = None  # None: any value (only NotIn and Exists say something)
    for r in reqs:
        if r.operator is selectors.Operator.IN:
            allowed = set(r.values) if allowed is None else allowed & set(r.values)
    return allowed is None or bool(allowed - excluded)


def services_overlap(one: Iterable[services.Service], other: Iterable[services.Service]) -> bool:
    """Whether a protocol and port exist that a service of each side covers."""
    theirs = [s for svc in other for s in svc.specs]
    return any(ports_overlap(a, b) for svc in one for a in svc.specs for b in theirs)


def ports_overlap(one: services.PortSpec, other: services.PortSpec) -> bool:
    """Whether one protocol and port is covered by both port specs."""
    if services.Protocol.ANY in (one.protocol, other.protocol):
        return True
    if one.protocol is not other.protocol:
        return False
    if not one.ports or not other.ports:
        return True
    return any(a.first <= b.last and b.first <= a.last for a in one.ports for b in other.ports)


def _networks(peer: selectors.Peer, ip_lists: IpLists) -> list[addresses.Network] | None:
    """The addresses of an address peer; None when they are not known (an unknown IP list)."""
    if isinstance(peer, selectors.CidrPeer):
        return peer.networks
    if isinstance(peer, selectors.IpListPeer):
        found = ip_lists.get(peer.name)
        return None if found is None else found.networks
    return None


def _windows_meet(one: Rule, other: Rule) -> bool:
    """Whether the two rules' time windows share a moment (a missing bound is open)."""
    starts = [m for m in (one.not_before, other.not_before) if m is not None]
    ends = [m for m in (one.not_after, other.not_after) if m is not None]
    start: datetime | None = max(starts) if starts else None
    end: datetime | None = min(ends) if ends else None
    return start is None or end is None or start < end
