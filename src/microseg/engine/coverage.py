"""Coverage: for every rule, whether it ever decides a connection, and if not, which rules do.

Fed by a PolicyEngine (its rule book and the evaluator's endpoint profiles); feeds the linter
(`microseg.engine.lint`: shadowed, redundant and unreachable rules).

Exact, not sampled. Addresses are cut into intervals at every edge of every network anybody
names (workload addresses, IP lists, CIDR peers, the control plane, loopback), so every address of
an interval has the same profile; intervals whose profiles have the same rule masks form one
endpoint class (`Evaluator.profile`, as `reachability` and `invariants` use). Ports are cut at
every edge of every rule's port ranges, so every port of a stretch matches the same rules. Each
(source class, destination class, port) is then walked through the rules matching it in
evaluation order, as the evaluator walks them: the first matching rule decides, `pass` drops the
rest of its tier, the control-plane channel is decided before any rule.

What it deliberately does not do: count a rule as deciding when it depends on something the
classes do not capture. A rule with a time window, or whose matching service names a process or a
user, decides only sometimes: it is recorded as deciding, and the rules after it stay reachable.
So a rule reported as never deciding never decides, whatever the clock or the process.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from microseg.engine import engine, rulebook
from microseg.model import addresses, rules, services, verdicts

SYSTEM = -1
"""Stands for the control-plane channel, which is decided before any rule."""
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
PORTED = (services.Protocol.TCP, services.Protocol.UDP, services.Protocol.SCTP)
MAX_STEPS = 20_000_000
"""Rule matches walked at most (over distinct candidate sets x ports); past it the analysis says
it is partial rather than hold a request or a CI job for minutes."""

Probe = tuple[services.Protocol, int | None]


@dataclass
class RuleCoverage:
    """What one rule of the book does over every connection it matches."""

    matched: int = 0
    """(Source class, destination class, port) points the rule matches."""
    decided: int = 0
    """Points where it is the first matching rule (or may be: a timed or process-bound rule)."""
    preempted_by: set[int] = field(default_factory=set)
    """Book indexes of the rules (SYSTEM: the control-plane channel) that decide before it."""


@dataclass(frozen=True)
class Coverage:
    """Per book index, the rule's coverage; `complete` is False when the walk hit MAX_STEPS."""

    rules: dict[int, RuleCoverage]
    complete: bool


@dataclass
class _Class:
    profile: object
    src_mask: int
    dst_mask: int
    control: tuple[int, ...]
    members: set[str | None] = field(default_factory=set)


def coverage(eng: engine.PolicyEngine) -> Coverage:
    """Walk every distinct (candidate rules, control-plane channels) of a class pair, on every port
    stretch, through the book (cost: classes² to find them, then distinct x ports x candidates)."""
    book = eng.book
    classes = _classes(eng)
    probes = _probes(eng)
    by_port = _rules_by_probe(book, probes)
    found: dict[int, RuleCoverage] = defaultdict(RuleCoverage)
    conditional: dict[tuple[int, Probe], bool] = {}
    steps = 0
    for candidates, control in _distinct_candidates(classes):
        for probe in probes:
            indexes = _bits(candidates & by_port[probe])
            if not indexes:
                continue
            steps += len(indexes)
            if steps > MAX_STEPS:
                return Coverage(dict(found), complete=False)
            point = _Point(indexes, probe, _control_plane(eng, control, probe))
            _walk(book, point, found, conditional)
    return Coverage(dict(found), complete=True)


def _distinct_candidates(classes: list[_Class]) -> set[tuple[int, tuple[int, ...]]]:
    """(Rules that can match, control-plane channels of the destination) over every class pair
    with two distinct endpoints: pairs with equal candidates are decided alike."""
    found: set[tuple[int, tuple[int, ...]]] = set()
    for src in classes:
        for dst in classes:
            candidates = src.src_mask & dst.dst_mask
            if candidates and _distinct(src, dst):
                found.add((candidates, dst.control))
    return found


def _rules_by_probe(book: rulebook.RuleBook, probes: list[Probe]) -> dict[Probe, int]:
    """Per probe, the mask of rules whose services cover it."""
    masks = dict.fromkeys(probes, 0)
    for br, matcher in zip(book.rules, book.port_matchers, strict=True):
        for probe in probes:
            if rulebook.ports_match(matcher, *probe):
                masks[probe] |= br.bit
    return masks


class _Point(NamedTuple):
    """One (source class, destination class, port): the rules that match it in evaluation order,
    and whether the control-plane channel decides it first."""

    indexes: list[int]
    probe: Probe
    system: bool


def _walk(
    book: rulebook.RuleBook,
    point: _Point,
    found: dict[int, RuleCoverage],
    conditional: dict[tuple[int, Probe], bool],
) -> None:
    """One point through its matching rules, as the evaluator decides it."""
    probe = point.probe
    proto, port = probe
    decider = SYSTEM if point.system else None
    passed_by: dict[str, int] = {}
    for index in point.indexes:
        rule = book.rules[index].rule
        seen = found[index]
        seen.matched += 1
        blocker = decider if decider is not None else passed_by.get(rule.tier)
        if blocker is not None:
            seen.preempted_by.add(blocker)
            continue
        seen.decided += 1
        key = (index, probe)
        if key not in conditional:
            conditional[key] = _conditional(book.rules[index], proto, port)
        if conditional[key]:
            continue
        if rule.action is rules.Action.PASS:
            passed_by[rule.tier] = index
        else:
            decider = index


def _conditional(br: rulebook.BookRule, proto: services.Protocol, port: int | None) -> bool:
    """Whether the rule matches this port only at some times or for some processes or users."""
    if br.timed:
        return True
    return all(s.has_process_constraint for s in br.rule.services if s.matches(proto, port))


def _distinct(src: _Class, dst: _Class) -> bool:
    """Whether the two classes hold two endpoints that are not one workload (which reaches itself)."""
    only = src.members if len(src.members) == 1 else None
    return not (only is not None and only == dst.members and None not in only)


def _bits(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def _classes(eng: engine.PolicyEngine) -> list[_Class]:
    """One entry per distinct (rule masks, control-plane channels) over every address interval."""
    by_key: dict[tuple[int, int, tuple[int, ...]], _Class] = {}
    for endpoint in _endpoints(eng):
        profile = eng.evaluator.profile(endpoint)
        control = tuple(i for i, cp in enumerate(eng.estate.control_plane) if endpoint.address in cp.network)
        key = (profile.src_mask, profile.dst_mask, control)
        cls = by_key.get(key)
        if cls is None:
            cls = by_key[key] = _Class(profile, profile.src_mask, profile.dst_mask, control)
        cls.members.add(endpoint.workload)
    return list(by_key.values())


def _endpoints(eng: engine.PolicyEngine) -> Iterator[verdicts.Endpoint]:
    """The first address of every interval between network edges (loopback left out: always allowed)."""
    nets: list[addresses.Network] = [*LOOPBACK]
    nets += [n for s in eng.book.static_sets.values() for n in s.networks]
    nets += [n for name in eng.workload_names() for n in eng.workload(name).addresses]
    nets += [cp.network for cp in eng.estate.control_plane]
    for version, top in ((4, 2**32), (6, 2**128)):
        cuts = {0}
        for net in (n for n in nets if n.version == version):
            cuts.add(int(net.network_address))
            cuts.add(int(net.broadcast_address) + 1)
        for cut in sorted(c for c in cuts if c < top):
            address = ipaddress.ip_address(cut) if version == 4 else ipaddress.IPv6Address(cut)
            if not address.is_loopback:
                yield verdicts.Endpoint(address, eng.workload_at(address))


def _probes(eng: engine.PolicyEngine) -> list[Probe]:
    """One port per stretch on which no rule's (or control-plane channel's) match changes."""
    cuts: dict[services.Protocol, set[int]] = {p: {1} for p in PORTED}
    for br in eng.book.rules:
        for spec in (s for svc in br.rule.services for s in svc.specs):
            if spec.protocol in cuts:
                cuts[spec.protocol].update(edge for r in spec.ports for edge in (r.first, r.last + 1))
    for cp in eng.estate.control_plane:
        for proto in PORTED if cp.protocol is services.Protocol.ANY else (cp.protocol,):
            if proto in cuts:
                cuts[proto].update((cp.port.first, cp.port.last + 1))
    found: list[Probe] = [(p, port) for p, edges in cuts.items() for port in sorted(edges) if port <= 65535]
    return [*found, (services.Protocol.ICMP, None)]


def _control_plane(eng: engine.PolicyEngine, control: tuple[int, ...], probe: Probe) -> bool:
    """Whether the control-plane channel decides this probe to this destination (as the evaluator)."""
    proto, port = probe
    for index in control:
        cp = eng.estate.control_plane[index]
        if cp.protocol in (services.Protocol.ANY, proto) and (port is None or port in cp.port):
            return True
    return False
