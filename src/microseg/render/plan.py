"""The rule plan: a document flattened into data-plane rules, before any syntax.

Fed by a ruleset document (plus what the host knows: cgroup paths per process, uids per user);
feeds the nftables and iptables formatters, so both say the same thing by construction. One
planned rule per (port spec, peer set, local set, address family) of an entry: named sets cannot
be unioned inside one nft or iptables rule, and all rules of one entry are adjacent with one
verdict, so splitting never changes which verdict wins.

Address families: an entry that names sets gets a rule per family even when a set has no members
of that family yet, so that a later set-element update (without new rules) stays correct; the
nftables formatter leaves such rules out with their empty sets (it replaces the whole table on
every change), the iptables one keeps them. An entry without sets is family-neutral, except ICMP,
which means icmp on IPv4 and ipv6-icmp on IPv6.

It does not decide verdicts per mode (`semantics.outcome` does) nor spell anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from microseg.errors import ValidationError
from microseg.model import addresses, estate, rules, ruleset, services
from microseg.render import semantics


@dataclass(frozen=True)
class AddressMatch:
    """Either a document address set (by its document name) or literal networks."""

    set_name: str | None = None
    networks: tuple[addresses.Network, ...] = ()


@dataclass(frozen=True)
class PlannedRule:
    """One rule: every given condition must hold. `spec` None means "a protocol without ports"
    (neither tcp, udp nor sctp), which only control-plane endpoints with protocol any need."""

    ref: str
    action: rules.Action
    family: int | None
    peer: AddressMatch | None
    local: AddressMatch | None
    spec: services.PortSpec | None
    not_before: int | None = None
    not_after: int | None = None
    cgroup: str | None = None
    uid: int | None = None


@dataclass(frozen=True)
class DirectionPlan:
    """Control-plane allowances, then the tiers in order with their rules."""

    control: tuple[PlannedRule, ...]
    tiers: tuple[tuple[str, tuple[PlannedRule, ...]], ...]


@dataclass(frozen=True)
class Plan:
    """Both directions and what could not be enforced exactly."""

    ingress: DirectionPlan
    egress: DirectionPlan
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class HostKnowledge:
    """What the host can tell the renderer, and what the data plane can enforce with it."""

    cgroups: Mapping[str, str]
    """Process name -> cgroup v2 path relative to the cgroup2 root."""
    uids: Mapping[str, int]
    """User name -> uid."""
    ingress_cgroup: bool
    """Whether the backend can match the receiving socket's cgroup on a new inbound connection."""


_CGROUP_PATH = re.compile(r"[A-Za-z0-9_.:@+,=-]+(/[A-Za-z0-9_.:@+,=-]+)*")
"""cgroup v2 paths we quote as they are (systemd's slices, scopes and services all fit)."""

PORTED = (services.Protocol.TCP, services.Protocol.UDP, services.Protocol.SCTP)


def build(doc: ruleset.RulesetDocument, host: HostKnowledge) -> Plan:
    """The plan for one document; a document naming an unknown set or tier is refused (ValidationError),
    so the agent keeps enforcing what it had rather than guessing."""
    ruleset.check_references(doc)
    set_names = [s.name for s in doc.address_sets]
    if len(set(set_names)) != len(set_names):
        raise ValidationError(f"document {doc.workload}: address set names repeat: {sorted(set_names)}")
    warnings: list[str] = []
    tier_order = tuple(dict.fromkeys(doc.tiers))  # a repeated tier adds nothing: first match wins
    directions = []
    for direction, entries in (("ingress", doc.ingress), ("egress", doc.egress)):
        tier_rules = tuple(
            (tier, tuple(r for e in entries if e.tier == tier for r in _entry(e, direction, host, warnings)))
            for tier in tier_order
        )
        control = tuple(r for ep in doc.control_plane for r in _endpoint(ep, direction))
        directions.append(DirectionPlan(control, tier_rules))
    return Plan(directions[0], directions[1], tuple(dict.fromkeys(warnings)))


def endpoint_specs(endpoint: estate.Endpoint) -> tuple[services.PortSpec | None, ...]:
    """Port specs meaning exactly `semantics.control_plane_matches` for one endpoint."""
    proto = endpoint.protocol
    if proto is services.Protocol.ANY:
        return (*(services.PortSpec(p, (endpoint.port,)) for p in PORTED), None)
    if proto.has_ports:
        return (services.PortSpec(proto, (endpoint.port,)),)
    return (services.PortSpec(proto),)


def control_replies(doc: ruleset.RulesetDocument) -> tuple[tuple[addresses.Network, services.PortRange], ...]:
    """(network, port) of the control-plane endpoints that speak TCP: both base chains accept
    non-initial packets from them (see `semantics.CONTROL_PLANE_REPLY_REF`)."""
    found = (
        (e.network, e.port)
        for e in doc.control_plane
        if e.protocol in (services.Protocol.TCP, services.Protocol.ANY)
    )
    return tuple(dict.fromkeys(found))


def _endpoint(endpoint: estate.Endpoint, direction: str) -> list[PlannedRule]:
    where = AddressMatch(networks=(endpoint.network,))
    peer, local = (None, where) if direction == "ingress" else (where, None)
    return [
        PlannedRule(semantics.CONTROL_PLANE_REF, rules.Action.ALLOW, endpoint.network.version, peer, local, s)
        for s in endpoint_specs(endpoint)
    ]


def _entry(
    entry: ruleset.Entry, direction: str, host: HostKnowledge, warnings: list[str]
) -> list[PlannedRule]:
    cgroup, uid = _process_and_user(entry, direction, host, warnings)
    neutral = entry.peer_sets is None and entry.local_sets is None
    peers = [None] if entry.peer_sets is None else [AddressMatch(s) for s in entry.peer_sets]
    locals_ = [None] if entry.local_sets is None else [AddressMatch(s) for s in entry.local_sets]
    out = []
    for spec in entry.ports:
        for peer in peers:
            for local in locals_:
                for family in _families(spec, neutral):
                    out.append(
                        PlannedRule(
                            entry.ref,
                            entry.action,
                            family,
                            peer,
                            local,
                            spec,
                            entry.not_before,
                            entry.not_after,
                            cgroup,
                            uid,
                        )
                    )
    return out


def _families(spec: services.PortSpec, neutral: bool) -> tuple[int | None, ...]:
    if not neutral:
        return (4, 6)
    return (4, 6) if spec.protocol is services.Protocol.ICMP else (None,)


def _process_and_user(
    entry: ruleset.Entry, direction: str, host: HostKnowledge, warnings: list[str]
) -> tuple[str | None, int | None]:
    cgroup = uid = None
    where = f"{entry.ref} ({direction})"
    if entry.process is not None:
        if entry.process not in host.cgroups:
            warnings.append(
                f"{where}: process {entry.process} not enforced: no cgroup known; enforced at port level"
            )
        elif direction == "ingress" and not host.ingress_cgroup:
            warnings.append(
                f"{where}: process {entry.process} not enforced: this data plane cannot see the receiving "
                "socket of a new connection; enforced at port level"
            )
        elif not plain_cgroup_path(host.cgroups[entry.process].strip("/")):
            warnings.append(
                f"{where}: process {entry.process} not enforced: cgroup path "
                f"{host.cgroups[entry.process]!r} is not a plain relative path; enforced at port level"
            )
        else:
            cgroup = host.cgroups[entry.process].strip("/")
    if entry.user is not None:
        if direction == "ingress":
            warnings.append(
                f"{where}: user {entry.user} not enforced: the owner of the receiving socket of a new "
                "connection is not visible; enforced at port level"
            )
        elif entry.user not in host.uids:
            warnings.append(f"{where}: user {entry.user} not enforced: no uid known; enforced at port level")
        else:
            uid = host.uids[entry.user]
    return cgroup, uid


def plain_cgroup_path(path: str) -> bool:
    """A relative path we can quote as it is, without `.` or `..` steps."""
    return bool(_CGROUP_PATH.fullmatch(path)) and not {".", ".."} & set(path.split("/"))


def split_for_hash_net(net: addresses.Network) -> tuple[addresses.Network, ...]:
    """ipset hash:net cannot hold a /0; two halves mean the same."""
    if net.prefixlen:
        return (net,)
    return tuple(net.subnets(prefixlen_diff=1))


def collapsed(networks: tuple[addresses.Network, ...], version: int) -> tuple[addresses.Network, ...]:
    """The members of one family, merged (documents are collapsed already; interval sets demand it)."""
    return tuple(addresses.collapse(n for n in networks if n.version == version))
