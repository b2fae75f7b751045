"""Hypothesis strategies: small clusters and microseg estates whose rules reach their pods, over
a tiny label alphabet so that selectors, guard rails, passes and quarantine often meet."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from microseg.k8s import cluster, importer
from microseg.model import addresses, iplists, labels, rules, selectors, services, tiers, workloads
from microseg.model.estate import Endpoint, Estate

NAMESPACES = ("ns-a", "ns-b", "ns-c")
VALUES = {"env": ("prod", "dev"), "app": ("a", "b"), "role": ("web", "db")}
KEYS = (*VALUES, importer.NAMESPACE_KEY, importer.namespace_label_key("env"))
KEY_VALUES = {
    **VALUES,
    importer.NAMESPACE_KEY: NAMESPACES,
    importer.namespace_label_key("env"): ("prod", "dev"),
}
Op = selectors.Operator


@st.composite
def pod_labels(draw: st.DrawFn) -> dict[str, str]:
    found = {k: draw(st.sampled_from(v)) for k, v in VALUES.items() if draw(st.booleans())}
    if draw(st.integers(0, 9)) == 0:
        found["quarantine"] = "true"
    if draw(st.integers(0, 7)) == 0:
        found[importer.MODE_LABEL] = draw(st.sampled_from(["alert", "visibility", "enforce"]))
    return found


@st.composite
def clusters(draw: st.DrawFn) -> cluster.Cluster:
    names = draw(st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=3, unique=True))
    spaces = {}
    for name in names:
        own = {"env": draw(st.sampled_from(("prod", "dev")))} if draw(st.booleans()) else {}
        if draw(st.integers(0, 4)) == 0:
            own[importer.MODE_LABEL] = "alert"
        spaces[name] = cluster.Namespace.of(name, own)
    count = draw(st.integers(2, 6))
    pods = tuple(
        cluster.Pod(draw(st.sampled_from(names)), f"pod-{i}", labels.Labels(draw(pod_labels())),
                    (ipaddress.ip_address(f"10.77.30.{i + 1}"),))
        for i in range(count)
    )  # fmt: skip
    if draw(st.integers(0, 2)) == 0:  # CoreDNS: exports must leave it alone and stay exact elsewhere
        spaces["kube-system"] = cluster.Namespace.of("kube-system")
        dns = labels.Labels({"k8s-app": "kube-dns"})
        pods += (cluster.Pod("kube-system", "coredns", dns, (ipaddress.ip_address("10.77.30.99"),)),)
    return cluster.Cluster.of(spaces, pods)


@st.composite
def requirement(draw: st.DrawFn) -> selectors.Requirement:
    key = draw(st.sampled_from(KEYS))
    op = draw(st.sampled_from(list(Op)))
    values = (
        tuple(draw(st.lists(st.sampled_from(KEY_VALUES[key]), min_size=1, max_size=2)))
        if op in (Op.IN, Op.NOT_IN)
        else ()
    )
    return selectors.Requirement(key, op, values)


def peers(with_lists: bool) -> st.SearchStrategy[selectors.Peer]:
    choices: list[st.SearchStrategy[selectors.Peer]] = [
        st.lists(requirement(), min_size=1, max_size=1).map(
            lambda r: selectors.SelectorPeer(selectors.LabelSelector(tuple(r)))
        ),
        st.lists(requirement(), min_size=0, max_size=2).map(
            lambda r: selectors.SelectorPeer(selectors.LabelSelector(tuple(r)))
        ),
        st.just(selectors.AnyPeer()),
    ]
    if with_lists:
        choices += [
            st.just(selectors.IpListPeer("lab")),
            st.just(selectors.CidrPeer((ipaddress.ip_network("10.77.31.0/30"),))),
        ]
    return st.one_of(*choices)


PORT_SPECS = [
    services.PortSpec(services.Protocol.TCP, (services.PortRange(80, 80),)),
    services.PortSpec(services.Protocol.TCP, (services.PortRange(8000, 8100),)),
    services.PortSpec(services.Protocol.TCP, (services.PortRange(443, 443),)),
    services.PortSpec(services.Protocol.UDP, (services.PortRange(53, 53),)),
    services.PortSpec(services.Protocol.SCTP),
]


@st.composite
def rule_services(draw: st.DrawFn, action: rules.Action) -> tuple[services.Service, ...]:
    if action is not rules.Action.ALLOW and draw(st.booleans()):
        return (services.ANY_SERVICE,)
    specs = draw(st.lists(st.sampled_from(PORT_SPECS), min_size=1, max_size=2, unique=True))
    return (
        services.Service(
            "svc-" + "-".join(str(i) for i in sorted(PORT_SPECS.index(s) for s in specs)), tuple(specs)
        ),
    )


@st.composite
def estates(draw: st.DrawFn, with_lists: bool = False) -> Estate:
    """Rules in the security and application tiers (and a custom one), some VMs, optional lists."""
    vms = tuple(
        workloads.Workload(f"vm-{i}", workloads.WorkloadKind.VM, (addresses.network(f"10.77.31.{i + 1}"),),
                           labels.Labels(draw(pod_labels())), mode=draw(st.sampled_from(list(workloads.Mode))))
        for i in range(draw(st.integers(0, 2)))
    )  # fmt: skip
    tier_names = [tiers.SECURITY, tiers.APPLICATION, tiers.APPLICATION, "platform"]
    found = []
    for i in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(list(rules.Action)))
        found.append(rules.Rule(
            f"r{i}", draw(st.sampled_from(tier_names)), i, action,
            tuple(draw(st.lists(peers(with_lists), min_size=1, max_size=2))),
            tuple(draw(st.lists(peers(with_lists), min_size=1, max_size=2))),
            draw(rule_services(action)),
        ))  # fmt: skip
    lists = (iplists.IpList("lab", (ipaddress.ip_network("10.77.30.0/30"),)),)
    return Estate(
        workloads=vms,
        ip_lists=lists,
        tiers=(*tiers.BUILTIN_TIERS, tiers.Tier(250, "platform")),
        rules=tuple(found),
        control_plane=(Endpoint(addresses.network("10.77.0.1"), services.PortRange(8440, 8440)),),
        quarantine_allow="lab" if with_lists and draw(st.booleans()) else None,
    )
