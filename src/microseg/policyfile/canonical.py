"""One canonical form per meaning: the order of things whose order means nothing.

The loader returns canonical estates, the dumper writes canonical estates and the synthetic
generator makes them, so two policy trees that differ only in file, document or list order load
into equal estates, dump into identical text, and `load(dump(e)) == e` holds.

Canonical means: workloads, IP lists, services, label rules and invariants sorted by name; tiers
by order; rules by (tier order, priority, name); inside a rule or invariant, peers and services
sorted; CIDR lists and port specs sorted. What it deliberately does not do: remove duplicates or
merge anything, which would change what a person wrote into something else.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from microseg.model import addresses, estate, invariants, iplists, rules, selectors, services

_PEER_RANK = {selectors.AnyPeer: 0, selectors.SelectorPeer: 1, selectors.IpListPeer: 2, selectors.CidrPeer: 3}
_LAST_TIER = 1 << 62
"""Rules of a tier the estate does not declare sort last (the loader reports them before that)."""


def inline_name(spec: services.PortSpec) -> str:
    """The name a rule's inline port spec gets as a Service: `inline:3306/tcp`."""
    return f"inline:{spec}"


def inline_service(spec: services.PortSpec) -> services.Service:
    """The Service an inline port spec in a rule stands for."""
    return services.Service(inline_name(spec), (spec,))


def is_inline(service: services.Service) -> bool:
    """Whether `service` is exactly what an inline port spec loads as."""
    return (
        len(service.specs) == 1
        and not service.has_process_constraint
        and service.name == inline_name(service.specs[0])
    )


def net_key(net: addresses.Network) -> tuple[int, int, int]:
    """v4 before v6, then by address, then wider first."""
    return (net.version, int(net.network_address), net.prefixlen)


def nets(items: tuple[addresses.Network, ...]) -> tuple[addresses.Network, ...]:
    """Networks in canonical order."""
    return tuple(sorted(items, key=net_key))


def peer_key(peer: selectors.Peer) -> tuple[int, str]:
    """any, selectors, IP lists, CIDRs; then by their text (canonical for canonical peers)."""
    return (_PEER_RANK[type(peer)], str(peer))


def service_key(service: services.Service) -> tuple[str, tuple[services.PortSpec, ...], tuple[str, ...]]:
    """By name, then by what it is (two services of one name differ only in estates built by hand)."""
    texts = (service.process, service.user, service.client_process, service.client_user)
    return (service.name, service.specs, tuple(t or "" for t in texts))


def peer(item: selectors.Peer) -> selectors.Peer:
    """A peer with its CIDR lists sorted."""
    if isinstance(item, selectors.CidrPeer):
        return selectors.CidrPeer(nets(item.cidrs), nets(item.excepts))
    return item


def service(item: services.Service) -> services.Service:
    """A service with its port specs sorted."""
    specs = tuple(sorted(item.specs))
    return item if specs == item.specs else dataclasses.replace(item, specs=specs)


Sided = TypeVar("Sided", rules.Rule, invariants.Invariant)


def rule(item: Sided) -> Sided:
    """A rule (or an invariant) with its peers and services in canonical order."""
    sources = tuple(sorted(map(peer, item.sources), key=peer_key))
    destinations = tuple(sorted(map(peer, item.destinations), key=peer_key))
    svcs = tuple(sorted(map(service, item.services), key=service_key))
    if (sources, destinations, svcs) == (item.sources, item.destinations, item.services):
        return item
    return dataclasses.replace(item, sources=sources, destinations=destinations, services=svcs)


def ip_list(item: iplists.IpList) -> iplists.IpList:
    """An IP list with its CIDRs and exceptions sorted."""
    cidrs, excepts = nets(item.cidrs), nets(item.excepts)
    if (cidrs, excepts) == (item.cidrs, item.excepts):
        return item
    return dataclasses.replace(item, cidrs=cidrs, excepts=excepts)


def endpoint_key(item: estate.Endpoint) -> tuple[tuple[int, int, int], services.PortRange, str]:
    """Control-plane endpoints by address, port, protocol."""
    return (net_key(item.network), item.port, item.protocol.value)


def rule_order(est: estate.Estate) -> dict[str, int]:
    """Tier name -> evaluation order, for sorting rules."""
    return {t.name: t.order for t in est.tiers}


def ordered(est: estate.Estate) -> estate.Estate:
    """The same estate in canonical order."""
    order = rule_order(est)
    return dataclasses.replace(
        est,
        workloads=tuple(sorted(est.workloads, key=lambda w: w.name)),
        label_rules=tuple(sorted(est.label_rules, key=lambda r: (r.name, r.priority))),
        ip_lists=tuple(sorted(map(ip_list, est.ip_lists), key=lambda i: i.name)),
        services=tuple(sorted(map(service, est.services), key=service_key)),
        tiers=tuple(sorted(est.tiers)),
        rules=tuple(
            sorted(
                map(rule, est.rules),
                key=lambda r: (order.get(r.tier, _LAST_TIER), r.tier, r.priority, r.name),
            )
        ),
        control_plane=tuple(sorted(est.control_plane, key=endpoint_key)),
        invariants=tuple(sorted(map(rule, est.invariants), key=lambda i: i.name)),
    )
