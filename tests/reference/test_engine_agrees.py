"""The engine agrees with the naive reference evaluator written from the documentation.

Random estates (several tiers, pass rules, quarantine at both levels, every mode, time windows,
IP lists with carve-outs, CIDR peers, process constraints, label rules, unmanaged CIDR workloads)
and random flows between their workloads, their lists' addresses and outsiders, at moments on and
around the windows' edges: the engine's decision, outcome, tier and rule must equal the reference's
(`tests/reference/evaluator.py`, which knows the documents and not the engine's code).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from microseg.engine import engine
from microseg.model import (
    addresses,
    estate,
    iplists,
    labelrules,
    labels,
    rules,
    selectors,
    services,
    tiers,
    verdicts,
    workloads,
)
from tests.engine.estates import DNS, HTTP, MYSQL, SSH, TCP, UDP, label_selectors, label_sets, svc
from tests.reference import evaluator

ICMP = services.Protocol.ICMP
SCTP = services.Protocol.SCTP

EDGES = (
    datetime(2026, 1, 1, tzinfo=UTC),
    datetime(2026, 6, 1, tzinfo=UTC),
    datetime(2026, 12, 1, tzinfo=UTC),
)
NUDGES = (
    timedelta(0),
    timedelta(0),
    timedelta(0),
    timedelta(microseconds=1),
    -timedelta(microseconds=1),
    timedelta(seconds=1),
    -timedelta(seconds=1),
)
ZONES = (UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8)))

SERVICES = (
    HTTP,
    MYSQL,
    DNS,
    SSH,
    services.ANY_SERVICE,
    svc("range", TCP, 8000),
    services.Service("web-range", (services.PortSpec(TCP, (services.PortRange(8000, 8100),)),)),
    services.Service("ping", (services.PortSpec(ICMP),)),
    services.Service("all-udp", (services.PortSpec(UDP),)),
    services.Service("sctp", (services.PortSpec(SCTP, (services.PortRange(3868, 3868),)),)),
    svc("sbin", TCP, 3306, 8000, process="/usr/sbin/*"),
    services.Service("java-client", (services.PortSpec(TCP),), client_process="java"),
    services.Service("any-nc", (services.PortSpec(services.Protocol.ANY),), process="nc*"),
    services.Service(
        "mysql-user", (services.PortSpec(TCP, (services.PortRange(3306, 3306),)),), user="mysql"
    ),
)
PORTS = (22, 53, 80, 3306, 3868, 7999, 8000, 8050, 8100, 8101, 8440, 9999)
PROTOCOLS = (TCP, TCP, TCP, TCP, UDP, ICMP, SCTP)
RULE_SERVICES = SERVICES + (services.ANY_SERVICE,) * 4
"""What rules name: `any` often, so that rules match flows often enough to compete."""
PROCESSES = (None, None, "mysqld", "/usr/sbin/mysqld", "nc", "/usr/bin/ncat", "java", "/opt/java/bin/java")
QUARANTINE_VALUES = (*(None,) * 9, "true", "full", "false")
OUTSIDERS = ("10.77.0.250", "10.77.9.200", "192.0.2.7", "127.0.0.1", "127.3.4.5", "::1", "2001:db8::ff")


def _cidr(draw: st.DrawFn, second: int = 0) -> addresses.Network:
    prefix = draw(st.sampled_from((24, 26, 28, 30, 32)))
    size = 1 << (32 - prefix)
    base = draw(st.integers(0, 255)) // size * size
    return addresses.network(f"10.77.{second}.{base}/{prefix}")


def _first_half(net: addresses.Network) -> addresses.Network:
    return addresses.network(f"{net.network_address}/{net.prefixlen + 1}")


@st.composite
def tier_sets(draw: st.DrawFn) -> tuple[tiers.Tier, ...]:
    """The built-ins, sometimes an `exception` and a `platform` tier, sometimes security and
    application swapped. The quarantine tier stays first (see test_a_tier_ordered_before_quarantine_is_refused)."""
    swap = draw(st.booleans())
    out = [
        tiers.Tier(100, tiers.QUARANTINE),
        tiers.Tier(300 if swap else 200, tiers.SECURITY),
        tiers.Tier(200 if swap else 300, tiers.APPLICATION),
    ]
    if draw(st.booleans()):
        out.append(tiers.Tier(150, "exception"))
    if draw(st.booleans()):
        out.append(tiers.Tier(250, "platform"))
    return tuple(out)


@st.composite
def peers(draw: st.DrawFn) -> selectors.Peer:
    kind = draw(st.sampled_from(("selector", "selector", "selector", "any", "cidr", "iplist", "quarantined")))
    if kind == "selector":
        return selectors.SelectorPeer(draw(label_selectors()))
    if kind == "quarantined":
        return selectors.SelectorPeer(
            selectors.LabelSelector.parse(draw(st.sampled_from(("quarantine", "!quarantine"))))
        )
    if kind == "any":
        return selectors.AnyPeer()
    if kind == "iplist":
        return selectors.IpListPeer(draw(st.sampled_from(("l1", "l2", "missing"))))
    if kind == "cidr" and draw(st.integers(0, 4)) == 0:
        return selectors.CidrPeer((addresses.network("2001:db8::/120"),))
    net = _cidr(draw, draw(st.sampled_from((0, 9))))
    cut: tuple[addresses.Network, ...] = (
        (_first_half(net),) if net.prefixlen < 32 and draw(st.booleans()) else ()
    )
    return selectors.CidrPeer((net,), cut)


@st.composite
def windows(draw: st.DrawFn) -> tuple[datetime | None, datetime | None]:
    """No window, an open-ended one, or [notBefore, notAfter) between two of the EDGES."""
    start, end = draw(st.sampled_from((None, *EDGES))), draw(st.sampled_from((None, *EDGES)))
    if start is not None and end is not None and start >= end:
        return None, None
    return start, end


@st.composite
def rule_lists(draw: st.DrawFn, tier_names: tuple[str, ...]) -> tuple[rules.Rule, ...]:
    """Rules in the estate's tiers (rarely one nobody declared), priorities that sometimes tie
    (the name breaks the tie), every action, some disabled, some timed."""
    out = []
    for i in range(draw(st.integers(1, 10))):
        not_before, not_after = draw(windows())
        out.append(
            rules.Rule(
                name=f"r{i}",
                tier=draw(
                    st.sampled_from((*tier_names, tiers.SECURITY, tiers.APPLICATION) * 3 + ("nosuch",))
                ),
                priority=draw(st.integers(0, 6)),
                action=draw(st.sampled_from(list(rules.Action))),
                sources=tuple(draw(st.lists(peers(), min_size=1, max_size=2))),
                destinations=tuple(draw(st.lists(peers(), min_size=1, max_size=2))),
                services=tuple(
                    draw(st.lists(st.sampled_from(RULE_SERVICES), min_size=1, max_size=2, unique=True))
                ),
                enabled=draw(st.sampled_from((True,) * 9 + (False,))),
                not_before=not_before,
                not_after=not_after,
            )
        )
    return tuple(out)


@st.composite
def managed_workload(draw: st.DrawFn, name: str, nets: tuple[addresses.Network, ...]) -> workloads.Workload:
    """A workload of any kind and mode on `nets`, labels from a tiny space, sometimes quarantined."""
    quarantine = draw(st.sampled_from(QUARANTINE_VALUES))
    return workloads.Workload(
        name,
        kind=draw(st.sampled_from((workloads.WorkloadKind.VM,) * 4 + tuple(workloads.WorkloadKind)))
        if all(n.num_addresses == 1 for n in nets)
        else workloads.WorkloadKind.UNMANAGED,
        addresses=nets,
        labels=labels.Labels({**draw(label_sets), **({"quarantine": quarantine} if quarantine else {})}),
        mode=draw(st.sampled_from(list(workloads.Mode))),
    )


@st.composite
def workload_lists(draw: st.DrawFn) -> tuple[workloads.Workload, ...]:
    """Hosts in 10.77.0.0/24 (one may have a second address in 10.77.8.0/24), any kind and mode,
    labels from a tiny space, some quarantined; sometimes an unmanaged /28 in 10.77.9.0/24."""
    hosts = draw(st.lists(st.integers(1, 254), min_size=1, max_size=7, unique=True))
    out = []
    for i, host in enumerate(hosts):
        nets = [addresses.network(f"10.77.0.{host}")]
        if i == 0:
            nets += [
                addresses.network(a)
                for a in draw(st.sampled_from(((), (f"10.77.8.{host}",), (f"2001:db8::{host}",))))
            ]
        out.append(draw(managed_workload(f"w{i}", tuple(nets))))
    if draw(st.booleans()):
        out.append(
            workloads.Workload(
                "legacy",
                kind=workloads.WorkloadKind.UNMANAGED,
                addresses=(addresses.network(f"10.77.9.{draw(st.sampled_from((0, 16, 32)))}/28"),),
                labels=labels.Labels(draw(label_sets)),
                mode=draw(st.sampled_from(list(workloads.Mode))),
            )
        )
    return tuple(out)


@st.composite
def label_rule_lists(draw: st.DrawFn) -> tuple[labelrules.LabelRule, ...]:
    """Label rules on addresses and names, some deriving `quarantine` (at either level)."""
    out = []
    for i in range(draw(st.integers(0, 2))):
        derived = draw(
            st.sampled_from(
                ({"role": "a"}, {"env": "b"}, {"app": "c"}, {"quarantine": "true"}, {"quarantine": "full"})
            )
        )
        condition = draw(st.sampled_from(("cidr", "hostname")))
        out.append(
            labelrules.LabelRule(
                f"lr{i}",
                labels.Labels(derived),
                cidr=addresses.network(draw(st.sampled_from(("10.77.0.0/25", "10.77.9.0/24"))))
                if condition == "cidr"
                else None,
                hostname_glob=draw(st.sampled_from(("w1*", "leg*"))) if condition == "hostname" else None,
                priority=i,
            )
        )
    return tuple(out)


@st.composite
def estates(draw: st.DrawFn) -> estate.Estate:
    tier_set = draw(tier_sets())
    first, second = _cidr(draw), _cidr(draw, 9)
    carved: tuple[addresses.Network, ...] = (
        (_first_half(first),) if first.prefixlen < 32 and draw(st.booleans()) else ()
    )
    lists = (iplists.IpList("l1", (_cidr(draw),)), iplists.IpList("l2", (first, second), carved))
    endpoint = estate.Endpoint(
        _cidr(draw),
        services.PortRange(8440, draw(st.sampled_from((8440, 8443)))),
        draw(st.sampled_from((TCP, UDP, SCTP))),
    )
    control = draw(st.sampled_from(((), (endpoint,))))
    return estate.Estate(
        workloads=draw(workload_lists()),
        label_rules=draw(label_rule_lists()),
        ip_lists=lists,
        services=SERVICES,
        tiers=tier_set,
        rules=draw(rule_lists(tuple(t.name for t in tier_set))),
        control_plane=control,
        quarantine_allow=draw(st.sampled_from((None, "l1", "l2"))),
    )


def address_pool(est: estate.Estate) -> list[addresses.Address]:
    """Addresses worth asking about: every workload's, inside the unmanaged CIDR, the edges of every
    list and CIDR peer, the control plane, and outsiders (loopback included)."""
    pool: list[addresses.Address] = [addresses.address(a) for a in OUTSIDERS]
    # workloads' own addresses three times over: flows between workloads are what rules are about
    pool += [n.network_address for w in est.workloads for n in w.addresses for _ in range(3)]
    networks = [n for w in est.workloads for n in w.addresses]
    networks += [n for lst in est.ip_lists for n in (*lst.cidrs, *lst.excepts)]
    networks += [e.network for e in est.control_plane]
    for rule in est.rules:
        networks += [
            n
            for p in (*rule.sources, *rule.destinations)
            if isinstance(p, selectors.CidrPeer)
            for n in (*p.cidrs, *p.excepts)
        ]
    for net in networks:
        pool += [net.network_address, net.broadcast_address, net.network_address + (net.num_addresses // 2)]
    return pool


@st.composite
def moments(draw: st.DrawFn) -> datetime:
    """On a window's edge, a microsecond or a second either side, in some time zone."""
    at = draw(st.sampled_from(EDGES)) + draw(st.sampled_from(NUDGES))
    return at.astimezone(draw(st.sampled_from(ZONES)))


@st.composite
def flows(draw: st.DrawFn, pool: list[addresses.Address]) -> evaluator.Flow:
    protocol = draw(st.sampled_from(PROTOCOLS))
    port = None if protocol is ICMP else draw(st.sampled_from(PORTS))
    return evaluator.Flow(
        source=draw(st.sampled_from(pool)),
        destination=draw(st.sampled_from(pool)),
        port=port,
        protocol=protocol,
        at=draw(moments()),
        process=draw(st.sampled_from(PROCESSES)),
        client_process=draw(st.sampled_from(PROCESSES)),
    )


@st.composite
def every_pair(draw: st.DrawFn, est: estate.Estate) -> list[evaluator.Flow]:
    """One to three probes (protocol, port, moment, processes), each between every ordered pair of
    workloads (an address inside each) and an outsider: random pairs alone rarely meet two
    workloads."""
    ends = [w.addresses[0].network_address + (w.addresses[0].num_addresses // 2) for w in est.workloads]
    ends.append(addresses.address(draw(st.sampled_from(OUTSIDERS[:3]))))
    out = []
    for probe in draw(st.lists(flows(ends[:1]), min_size=1, max_size=3)):
        out += [replace(probe, source=a, destination=b) for a in ends for b in ends]
    return out


@st.composite
def cases(draw: st.DrawFn) -> tuple[estate.Estate, list[evaluator.Flow]]:
    est = draw(estates())
    return est, draw(every_pair(est)) + draw(st.lists(flows(address_pool(est)), max_size=20))


@st.composite
def changed(
    draw: st.DrawFn, before: estate.Estate
) -> tuple[estate.Estate, list[tuple[str, workloads.Workload | None]]]:
    """`before` after a few workload changes (relabel, new mode or kind, quarantine, a move to another
    address, a new workload, a removal), and the changes as (name, new workload or None)."""
    current = {w.name: w for w in before.workloads}
    steps: list[tuple[str, workloads.Workload | None]] = []
    for i in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from((*sorted(current), f"n{i}")))
        if name in current and draw(st.integers(0, 3)) == 0:
            del current[name]
            steps.append((name, None))
            continue
        taken = {n for w in current.values() if w.name != name for n in w.addresses}
        nets = (
            current[name].addresses
            if name in current and draw(st.booleans())
            else (addresses.network(f"10.77.0.{draw(st.integers(1, 254))}"),)
        )
        if any(n.overlaps(t) for n in nets for t in taken if n.version == t.version):
            continue
        current[name] = draw(managed_workload(name, nets))
        steps.append((name, current[name]))
    return before.with_workloads(tuple(current.values())), steps


def engine_answer(eng: engine.PolicyEngine, est: estate.Estate, flow: evaluator.Flow) -> evaluator.Answer:
    """The engine's verdict for `flow`, its endpoints named as the reference resolves them."""
    ends = []
    for address in (flow.source, flow.destination):
        owner = next((w.name for w in est.workloads if any(address in n for n in w.addresses)), None)
        assert eng.workload_at(address) == owner, address
        ends.append(verdicts.Endpoint(address, owner))
    verdict = eng.evaluate(
        ends[0],
        ends[1],
        flow.port,
        flow.protocol,
        process=flow.process,
        client_process=flow.client_process,
        at=flow.at,
    )
    return evaluator.Answer(verdict.decision, verdict.outcome, verdict.tier, verdict.rule)


@settings(max_examples=200, deadline=None)
@given(cases())
def test_the_engine_agrees_with_the_reference(case: tuple[estate.Estate, list[evaluator.Flow]]) -> None:
    est, found = case
    eng = engine.PolicyEngine(est)
    for flow in found:
        assert engine_answer(eng, est, flow) == evaluator.evaluate(est, flow), (flow, est)


@st.composite
def change_cases(
    draw: st.DrawFn,
) -> tuple[estate.Estate, estate.Estate, list[tuple[str, workloads.Workload | None]], list[evaluator.Flow]]:
    before = draw(estates())
    after, steps = draw(changed(before))
    pool = address_pool(before) + address_pool(after)
    return before, after, steps, draw(every_pair(after)) + draw(st.lists(flows(pool), max_size=20))


@settings(max_examples=80, deadline=None)
@given(change_cases())
def test_after_workload_changes_the_engine_still_agrees(
    case: tuple[
        estate.Estate, estate.Estate, list[tuple[str, workloads.Workload | None]], list[evaluator.Flow]
    ],
) -> None:
    """Verdicts asked before the changes (which may fill caches) do not leak into those after."""
    before, after, steps, found = case
    eng = engine.PolicyEngine(before)
    for flow in found:
        engine_answer(eng, before, flow)
    for name, workload in steps:
        if workload is None:
            eng.remove_workload(name)
        else:
            eng.upsert_workload(workload)
    for flow in found:
        assert engine_answer(eng, after, flow) == evaluator.evaluate(after, flow), (flow, steps, after)
