"""Hypothesis strategies for model values: label keys and values, selectors, networks, documents."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from microseg.model import addresses, estate, rules, ruleset, selectors, services, workloads

NAME_REGEX = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
"""Kubernetes label name / value syntax (without the empty value)."""

label_names = st.from_regex(NAME_REGEX, fullmatch=True)
dns_labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", fullmatch=True)
prefixes = st.lists(dns_labels, min_size=1, max_size=3).map(".".join)
label_keys = st.one_of(label_names, st.tuples(prefixes, label_names).map("/".join))
label_values = st.one_of(st.just(""), label_names)


@st.composite
def requirements(draw: st.DrawFn) -> selectors.Requirement:
    """Any valid requirement, values (including the empty value) where the operator takes them."""
    operator = draw(st.sampled_from(list(selectors.Operator)))
    values: tuple[str, ...] = ()
    if operator in (selectors.Operator.IN, selectors.Operator.NOT_IN):
        values = tuple(draw(st.lists(label_values, min_size=1, max_size=4)))
    return selectors.Requirement(draw(label_keys), operator, values)


label_selectors = st.lists(requirements(), max_size=5).map(lambda reqs: selectors.LabelSelector(tuple(reqs)))

small_keys = st.sampled_from(["app", "env", "tier", "team"])
small_values = st.sampled_from(["", "a", "b", "c"])
small_labelsets = st.dictionaries(small_keys, small_values, max_size=4)
"""Label sets over a tiny alphabet, so that selectors and labels often meet."""


@st.composite
def small_requirements(draw: st.DrawFn) -> selectors.Requirement:
    """A requirement over the tiny alphabet of `small_labelsets`."""
    operator = draw(st.sampled_from(list(selectors.Operator)))
    values: tuple[str, ...] = ()
    if operator in (selectors.Operator.IN, selectors.Operator.NOT_IN):
        values = tuple(draw(st.lists(small_values, min_size=1, max_size=3)))
    return selectors.Requirement(draw(small_keys), operator, values)


V4_BASE = int(ipaddress.IPv4Address("10.1.2.0"))
V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))


@st.composite
def small_v4_networks(draw: st.DrawFn) -> ipaddress.IPv4Network:
    """A network inside 10.1.2.0/26 (64 addresses: small enough to enumerate)."""
    prefix = draw(st.integers(26, 32))
    size = 2 ** (32 - prefix)
    start = draw(st.integers(0, 64 // size - 1)) * size
    return ipaddress.IPv4Network((V4_BASE + start, prefix))


@st.composite
def small_v6_networks(draw: st.DrawFn) -> ipaddress.IPv6Network:
    """A network inside 2001:db8::/122 (64 addresses)."""
    prefix = draw(st.integers(122, 128))
    size = 2 ** (128 - prefix)
    start = draw(st.integers(0, 64 // size - 1)) * size
    return ipaddress.IPv6Network((V6_BASE + start, prefix))


@st.composite
def any_networks(draw: st.DrawFn) -> addresses.Network:
    """Any v4 or v6 network across the whole address space, host bits zero."""
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    prefix = draw(st.integers(0, bits))
    value = draw(st.integers(0, 2**bits - 1)) >> (bits - prefix) << (bits - prefix)
    return ipaddress.IPv4Network((value, prefix)) if version == 4 else ipaddress.IPv6Network((value, prefix))


host_networks = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda n: ipaddress.IPv4Network((n, 32))),
    st.integers(0, 2**128 - 1).map(lambda n: ipaddress.IPv6Network((n, 128))),
)

ports = st.integers(1, 65535)
port_ranges = st.tuples(ports, ports).map(lambda p: services.PortRange(min(p), max(p)))


@st.composite
def port_specs(draw: st.DrawFn) -> services.PortSpec:
    """A protocol with port ranges where the protocol has ports."""
    protocol = draw(st.sampled_from(list(services.Protocol)))
    ranges = tuple(draw(st.lists(port_ranges, max_size=3))) if protocol.has_ports else ()
    return services.PortSpec(protocol, ranges)


TIER_NAMES = ("quarantine", "security", "application", "extra-1")
SET_NAMES = ("admins", "clients", "dns", "sel_0a1b2c3d4e", "vips")
RULE_NAMES = st.from_regex(r"[a-z0-9]([-a-z0-9_.]{0,10}[a-z0-9])?", fullmatch=True)


@st.composite
def entries(draw: st.DrawFn, tiers: tuple[str, ...], sets: tuple[str, ...]) -> ruleset.Entry:
    """An entry whose tier is one of `tiers` and whose set names are among `sets`."""
    tier = draw(st.sampled_from(tiers))
    set_refs = (st.none() | st.lists(st.sampled_from(sets), max_size=3).map(tuple)) if sets else st.none()
    not_before = draw(st.none() | st.integers(0, 2**31))
    not_after = draw(st.none() | st.integers(0, 2**31).map(lambda n: n + (not_before or 0) + 1))
    return ruleset.Entry(
        ref=f"{tier}/{draw(RULE_NAMES)}",
        tier=tier,
        action=draw(st.sampled_from(list(rules.Action))),
        peer_sets=draw(set_refs),
        local_sets=draw(set_refs),
        ports=tuple(draw(st.lists(port_specs(), min_size=1, max_size=3))),
        process=draw(st.none() | st.sampled_from(["nginx", "/usr/sbin/sshd", "python3*"])),
        user=draw(st.none() | st.sampled_from(["root", "www-data"])),
        not_before=not_before,
        not_after=not_after,
    )


@st.composite
def documents(draw: st.DrawFn) -> ruleset.RulesetDocument:
    """A consistent document (every referenced set and tier exists), sets in name order as the engine
    emits them, without a hash."""
    tiers = tuple(draw(st.lists(st.sampled_from(TIER_NAMES), min_size=1, max_size=4, unique=True)))
    set_names = sorted(draw(st.sets(st.sampled_from(SET_NAMES), max_size=4)))
    sets = tuple(
        ruleset.AddressSet(
            name,
            tuple(addresses.collapse(draw(st.lists(any_networks(), max_size=3)))),
            draw(st.sampled_from(["", "{app=web}", "iplist:partners", "ünïcode"])),
        )
        for name in set_names
    )
    endpoint = st.builds(
        estate.Endpoint, any_networks(), port_ranges, st.sampled_from(list(services.Protocol))
    )
    entry = entries(tiers, tuple(set_names))
    return ruleset.RulesetDocument(
        workload=draw(st.sampled_from(["web-1", "db.prod", "ünïcode-host"])),
        addresses=tuple(
            sorted(
                set(draw(st.lists(host_networks, min_size=1, max_size=3))),
                key=lambda n: (n.version, int(n.network_address)),
            )
        ),
        mode=draw(st.sampled_from(list(workloads.Mode))),
        policy_version=draw(st.sampled_from(["draft", "v1", "v42"])),
        tiers=tiers,
        control_plane=tuple(draw(st.lists(endpoint, max_size=2))),
        address_sets=sets,
        ingress=tuple(draw(st.lists(entry, max_size=4))),
        egress=tuple(draw(st.lists(entry, max_size=4))),
    )
