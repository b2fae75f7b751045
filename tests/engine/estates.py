"""Small hand-built estates and hypothesis strategies for random ones, shared by engine tests."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import strategies as st

from microseg.model import addresses, estate, iplists, labels, rules, selectors, services, workloads

TCP = services.Protocol.TCP
UDP = services.Protocol.UDP


def wl(name: str, ip: str, mode: str = "enforce", kind: str = "vm", **lab: str) -> workloads.Workload:
    """A workload with one address."""
    return workloads.Workload(
        name,
        kind=workloads.WorkloadKind(kind),
        addresses=(addresses.network(ip),),
        labels=labels.Labels(lab),
        mode=workloads.Mode(mode),
    )


def sel(text: str) -> selectors.SelectorPeer:
    """A selector peer from kubectl syntax."""
    return selectors.SelectorPeer(selectors.LabelSelector.parse(text))


def svc(name: str, proto: services.Protocol, *ports: int, process: str | None = None) -> services.Service:
    """A service with single ports."""
    ranges = tuple(services.PortRange(p, p) for p in ports)
    return services.Service(name, (services.PortSpec(proto, ranges),), process=process)


def rule(name: str, tier: str, prio: int, action: str, src: tuple[selectors.Peer, ...],
         dst: tuple[selectors.Peer, ...], svcs: tuple[services.Service, ...], **kw: object) -> rules.Rule:  # fmt: skip
    """A rule with positional essentials."""
    return rules.Rule(name, tier, prio, rules.Action(action), src, dst, svcs, **kw)  # type: ignore[arg-type]


HTTP = svc("http", TCP, 80, 443)
MYSQL = svc("mysql", TCP, 3306, process="mysqld")
DNS = services.Service(
    "dns",
    (
        services.PortSpec(UDP, (services.PortRange(53, 53),)),
        services.PortSpec(TCP, (services.PortRange(53, 53),)),
    ),
)
SSH = svc("ssh", TCP, 22)


def crm_estate() -> estate.Estate:
    """A small three-tier estate exercising every kind of peer and tier behaviour."""
    ws = (
        wl("lb-1", "10.77.1.10", env="prod", app="crm", role="lb"),
        wl("web-1", "10.77.1.11", env="prod", app="crm", role="web"),
        wl("web-2", "10.77.1.12", "alert", env="prod", app="crm", role="web"),
        wl("db-1", "10.77.1.20", env="prod", app="crm", role="db"),
        wl("dev-web", "10.77.2.11", env="dev", app="crm", role="web"),
        wl("dns-1", "10.77.3.53", "visibility", role="dns"),
        wl("bastion", "10.77.4.2", role="bastion"),
        wl("legacy", "10.77.9.0/28", kind="unmanaged", role="billing"),
        wl("bad-web", "10.77.1.13", env="prod", app="crm", role="web", quarantine="true"),
    )
    rs = (
        rule("env-separation", "security", 100, "deny", (sel("env=dev"),), (sel("env=prod"),),
             (services.ANY_SERVICE,), reason="dev never reaches prod"),
        rule("bastion-ssh", "security", 50, "allow", (sel("role=bastion"),), (selectors.AnyPeer(),), (SSH,)),
        rule("to-app-tier", "security", 200, "pass", (sel("env=prod"),), (sel("env=prod"),), (services.ANY_SERVICE,)),
        rule("block-rest-prod", "security", 300, "deny", (selectors.AnyPeer(),), (sel("env=prod"),),
             (svc("http80", TCP, 80),)),
        rule("corp-to-lb", "security", 40, "allow", (selectors.IpListPeer("corp"),), (sel("role=lb"),), (HTTP,)),
        rule("lb-to-web", "application", 100, "allow", (sel("role=lb"),), (sel("role=web"),), (HTTP,)),
        rule("web-to-db", "application", 110, "allow", (sel("role=web"),), (sel("role=db"),), (MYSQL,)),
        rule("all-dns", "application", 120, "allow", (selectors.AnyPeer(),), (sel("role=dns"),), (DNS,)),
        rule("db-to-legacy", "application", 130, "allow", (sel("role=db"),), (sel("role=billing"),),
             (svc("billing", TCP, 5000),)),
        rule("net-to-web", "application", 140, "allow",
             (selectors.CidrPeer((addresses.network("10.77.8.0/24"),), (addresses.network("10.77.8.128/25"),)),),
             (sel("role=web"),), (HTTP,)),
        rule("maintenance", "application", 150, "allow", (sel("role=bastion"),), (sel("role=db"),),
             (svc("mgmt", TCP, 9000),), not_before=datetime(2026, 1, 1, tzinfo=UTC),
             not_after=datetime(2026, 2, 1, tzinfo=UTC)),
    )  # fmt: skip
    return estate.Estate(
        workloads=ws,
        rules=rs,
        ip_lists=(
            iplists.IpList("corp", (addresses.network("10.77.200.0/24"),)),
            iplists.IpList("forensics", (addresses.network("10.77.250.0/24"),)),
        ),
        control_plane=(estate.Endpoint(addresses.network("10.77.0.1/32"), services.PortRange(8440, 8440)),),
        quarantine_allow="forensics",
    )


# -- random estates ----------------------------------------------------------------------------

KEYS = ("env", "app", "role")
VALUES = ("a", "b", "c")
label_sets = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)


@st.composite
def label_selectors(draw: st.DrawFn) -> selectors.LabelSelector:
    """Random selectors over a tiny label space, so that they often match."""
    reqs = []
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=2, unique=True)):
        op = draw(st.sampled_from(list(selectors.Operator)))
        has_values = op in (selectors.Operator.IN, selectors.Operator.NOT_IN)
        values = tuple(draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=2))) if has_values else ()
        reqs.append(selectors.Requirement(key, op, values))
    return selectors.LabelSelector(tuple(reqs))


def _cidr(draw: st.DrawFn) -> addresses.Network:
    prefix = draw(st.sampled_from((24, 26, 28, 30, 32)))
    base = (
        draw(st.integers(0, 255)) & ~((1 << (32 - prefix)) - 1) if prefix < 32 else draw(st.integers(0, 255))
    )
    return addresses.network(f"10.77.0.{base}/{prefix}")


@st.composite
def peers(draw: st.DrawFn) -> selectors.Peer:
    """Any kind of peer."""
    kind = draw(st.sampled_from(("selector", "selector", "selector", "any", "cidr", "iplist")))
    if kind == "selector":
        return selectors.SelectorPeer(draw(label_selectors()))
    if kind == "any":
        return selectors.AnyPeer()
    if kind == "iplist":
        return selectors.IpListPeer(draw(st.sampled_from(("l1", "l2", "missing"))))
    net = _cidr(draw)
    return selectors.CidrPeer((net,))


SERVICES = (HTTP, MYSQL, DNS, SSH, services.ANY_SERVICE, svc("range", TCP, 8000))


REFERENCE_TIME = datetime(2026, 6, 1, tzinfo=UTC)
WINDOW_EDGES = (None, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC),
                datetime(2026, 12, 1, tzinfo=UTC))  # fmt: skip


@st.composite
def windows(draw: st.DrawFn) -> dict[str, datetime | None]:
    """No window, or a window before, around or after REFERENCE_TIME (edges included)."""
    start, end = draw(st.sampled_from(WINDOW_EDGES)), draw(st.sampled_from(WINDOW_EDGES))
    if start is not None and end is not None and start >= end:
        return {}
    return {"not_before": start, "not_after": end}


@st.composite
def rule_lists(draw: st.DrawFn) -> tuple[rules.Rule, ...]:
    """Random rules in three tiers, unique priorities, every action, some time windows."""
    out = []
    for i in range(draw(st.integers(0, 10))):
        out.append(
            rules.Rule(
                name=f"r{i}",
                tier=draw(st.sampled_from(("security", "application", "quarantine"))),
                priority=i,
                action=draw(st.sampled_from(list(rules.Action))),
                sources=tuple(draw(st.lists(peers(), min_size=1, max_size=2))),
                destinations=tuple(draw(st.lists(peers(), min_size=1, max_size=2))),
                services=tuple(
                    draw(st.lists(st.sampled_from(SERVICES), min_size=1, max_size=2, unique=True))
                ),
                **draw(windows()),
            )
        )
    return tuple(out)


@st.composite
def workload_lists(draw: st.DrawFn, max_size: int = 8) -> tuple[workloads.Workload, ...]:
    """Workloads on distinct host addresses in 10.77.0.0/24, random labels and modes."""
    hosts = draw(st.lists(st.integers(1, 254), min_size=1, max_size=max_size, unique=True))
    quarantined = draw(st.sets(st.integers(0, len(hosts) - 1), max_size=1))
    return tuple(
        workloads.Workload(
            f"w{i}",
            addresses=(addresses.network(f"10.77.0.{h}"),),
            labels=labels.Labels(
                {**draw(label_sets), **({"quarantine": "true"} if i in quarantined else {})}
            ),
            mode=draw(st.sampled_from(list(workloads.Mode))),
            kind=draw(
                st.sampled_from((workloads.WorkloadKind.VM,) * 5 + (workloads.WorkloadKind.UNMANAGED,))
            ),
        )
        for i, h in enumerate(hosts)
    )


@st.composite
def estates(draw: st.DrawFn) -> estate.Estate:
    """Random estates: workloads, rules, two IP lists, sometimes a quarantined workload."""
    ws = draw(workload_lists())
    control = draw(st.sampled_from(((), (estate.Endpoint(_cidr(draw), services.PortRange(8440, 8440)),))))
    return estate.Estate(
        control_plane=control,
        workloads=ws,
        rules=draw(rule_lists()),
        ip_lists=(
            iplists.IpList("l1", (_cidr(draw),)),
            iplists.IpList("l2", (_cidr(draw), _cidr(draw))),
        ),
        quarantine_allow=draw(st.sampled_from((None, "l1"))),
    )
