"""Translation validation: for random documents, the rendered nft text means what the document means.

For each random document we render nftables, parse the *text* back with `nftverify`, and evaluate a
grid of first packets (both directions, both families, members and strangers of every set, every
protocol, ports inside and outside ranges, times around the windows, sockets in and out of the
mapped cgroups, owners with and without the mapped uid). Each verdict, deciding rule, and log line
must equal `semantics.decide` + `semantics.outcome` on the document, where entries whose process
or user the renderer enforces are dropped for packets that do not carry them.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microseg import settings as config
from microseg.model import addresses, estate, rules, ruleset, services, workloads
from microseg.render import iptables, nftables, nftverify, semantics
from tests.render import netns

P = services.Protocol
V4_NETS = ("10.0.0.0/24", "10.0.0.1/32", "10.0.1.0/28", "192.0.2.0/24", "0.0.0.0/0", "10.0.0.2/32")
V6_NETS = ("2001:db8::/64", "2001:db8::1/128", "2001:db8:1::/48", "::/0", "2001:db8::2/128")
PEERS = tuple(
    map(
        addresses.address,
        (
            "10.0.0.1",
            "10.0.0.200",
            "10.0.1.3",
            "192.0.2.9",
            "198.51.100.1",
            "2001:db8::1",
            "2001:db8::99",
            "2001:db8:1::5",
            "2001:db8:2::1",
        ),
    )
)
WORKLOAD = tuple(map(addresses.address, ("10.0.0.2", "10.0.0.3", "2001:db8::2")))
RANGES = ((22, 22), (80, 80), (8000, 8100), (443, 443))
PROBES = (
    (P.TCP, 22),
    (P.TCP, 8050),
    (P.TCP, 9999),
    (P.UDP, 80),
    (P.UDP, 443),
    (P.SCTP, 8000),
    (P.ICMP, None),
    (P.ANY, None),
)
TIMES = (999, 1000, 2000)
TIERS = ("quarantine", "security", "application", "a-very-long-tier-name-0123456789")
SET_NAMES = ("s0", "s1", "db.prod/primary", "9lives")
CGROUPS = {"nginx": "system.slice/nginx.service"}
SOCKETS = (None, "system.slice/nginx.service", "system.slice/nginx.service/worker", "system.slice/other")
UIDS = {"www": 33}
OWNERS = (None, 33, 0)
L4 = {P.TCP: "tcp", P.UDP: "udp", P.SCTP: "sctp", P.ANY: "gre"}


def port_specs() -> st.SearchStrategy[services.PortSpec]:
    ported = st.builds(
        lambda proto, ranges: services.PortSpec(proto, tuple(services.PortRange(*r) for r in ranges)),
        st.sampled_from((P.TCP, P.UDP, P.SCTP)),
        st.lists(st.sampled_from(RANGES), max_size=3, unique=True),
    )
    return st.one_of(ported, st.sampled_from((services.PortSpec(P.ICMP), services.PortSpec(P.ANY))))


def address_sets() -> st.SearchStrategy[tuple[ruleset.AddressSet, ...]]:
    """Up to four sets (some with names nft cannot take as they are) over overlapping networks."""
    members = st.lists(st.sampled_from(V4_NETS + V6_NETS), max_size=3)
    return st.lists(members, max_size=len(SET_NAMES)).map(
        lambda lists: tuple(
            ruleset.AddressSet(name, tuple(addresses.collapse(map(addresses.network, nets))))
            for name, nets in zip(SET_NAMES, lists, strict=False)
        )
    )


def entries(tiers: tuple[str, ...], set_names: list[str]) -> st.SearchStrategy[ruleset.Entry]:
    """Entries of any action over those tiers and sets, with processes, users and time windows."""
    set_refs = st.none()
    if set_names:
        set_refs = st.one_of(
            st.none(), st.lists(st.sampled_from(set_names), max_size=2, unique=True).map(tuple)
        )
    return st.builds(
        lambda i, tier, action, peers, local, ports, process, user, window: ruleset.Entry(
            f"{tier}/r{i}", tier, action, peers, local, tuple(ports), process, user, *window
        ),
        st.integers(0, 99),
        st.sampled_from(tiers),
        st.sampled_from(rules.Action),
        set_refs,
        set_refs,
        st.lists(port_specs(), min_size=1, max_size=2),
        st.sampled_from((None, None, "nginx", "mysqld")),
        st.sampled_from((None, None, "www", "nobody")),
        st.sampled_from(((None, None), (1000, None), (None, 2000), (1000, 2000), (2000, 1000))),
    )


def endpoints() -> st.SearchStrategy[estate.Endpoint]:
    """Control-plane endpoints, the workload's own address among them, every protocol kind."""
    return st.builds(
        estate.Endpoint,
        st.sampled_from(("10.0.0.2/32", "10.0.0.0/24", "192.0.2.9/32", "2001:db8::2/128")).map(
            addresses.network
        ),
        st.sampled_from((services.PortRange(443, 443), services.PortRange(8000, 8100))),
        st.sampled_from((P.TCP, P.UDP, P.ANY, P.ICMP)),
    )


@st.composite
def documents(draw: st.DrawFn) -> ruleset.RulesetDocument:
    """Random documents; tiers may repeat, sets may be empty or overlap, entries may name no set."""
    tiers = tuple(draw(st.lists(st.sampled_from(TIERS), min_size=1, max_size=4)))
    sets = draw(address_sets())
    some_entries = st.lists(entries(tiers, [s.name for s in sets]), max_size=6)
    return ruleset.RulesetDocument(
        workload="w",
        addresses=tuple(addresses.network(str(a)) for a in WORKLOAD),
        mode=draw(st.sampled_from(workloads.Mode)),
        policy_version="v1",
        tiers=tiers,
        control_plane=tuple(draw(st.lists(endpoints(), max_size=2))),
        address_sets=sets,
        ingress=tuple(draw(some_entries)),
        egress=tuple(draw(some_entries)),
    )


def enforced_view(doc: ruleset.RulesetDocument, sock: str | None, uid: int | None) -> ruleset.RulesetDocument:
    """The document minus entries whose enforced process or user this packet's socket does not have."""

    def keep(entry: ruleset.Entry, direction: str) -> bool:
        if entry.process in CGROUPS:
            path = CGROUPS[entry.process]
            if sock is None or not (sock == path or sock.startswith(path + "/")):
                return False
        return not (direction == "egress" and entry.user in UIDS and uid != UIDS[entry.user])

    return replace(
        doc,
        ingress=tuple(e for e in doc.ingress if keep(e, "ingress")),
        egress=tuple(e for e in doc.egress if keep(e, "egress")),
    )


def packet(
    direction: str, peer: addresses.Address, local: addresses.Address, probe: tuple[P, int | None], at: int
) -> nftverify.Packet:
    proto, port = probe
    family = peer.version
    l4 = "icmp" if proto is P.ICMP and family == 4 else "ipv6-icmp" if proto is P.ICMP else L4[proto]
    src, dst = (peer, local) if direction == "ingress" else (local, peer)
    icmp_type = None if proto is not P.ICMP else (8 if family == 4 else 128)
    return nftverify.Packet(family, src, dst, l4, port, time=at, icmp_type=icmp_type)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(), rate=st.sampled_from((0, 0, 5)))
def test_rendered_nftables_means_the_document(doc: ruleset.RulesetDocument, rate: int) -> None:
    text = nftables.render(doc, config.RenderSettings(log_rate_per_second=rate), CGROUPS, uids=UIDS).text
    program = nftverify.parse(text)
    grid = itertools.product(("ingress", "egress"), PEERS, WORKLOAD, PROBES, TIMES)
    owners = itertools.cycle(itertools.product(SOCKETS, OWNERS[:-1]))  # every pairing, spread over the grid
    for direction, peer, local, (proto, port), at in grid:
        if peer.version != local.version:
            continue
        hook: Literal["input", "output"] = "input" if direction == "ingress" else "output"
        for sock, uid in (next(owners), (None, OWNERS[-1])):
            pkt = replace(packet(direction, peer, local, (proto, port), at), cgroup=sock, uid=uid)
            view = enforced_view(doc, sock, uid)
            action, ref = semantics.decide(view, direction, peer, local, proto, port, at)  # type: ignore[arg-type]
            verdict, logged = semantics.outcome(doc.mode, action)
            got = nftverify.evaluate(program, hook, pkt)
            assert (got.verdict, got.ref, got.logged) == (verdict, ref, logged), (direction, pkt)
            if logged:
                assert got.log_prefixes == (f"ms:{'d' if verdict == 'drop' else 'w'}:{ref}",)
            if rate and logged:
                over = nftverify.evaluate(program, hook, replace(pkt, over_limit=True))
                assert (over.verdict, over.ref, over.logged) == (verdict, ref, False)


@pytest.mark.netns
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents())
def test_random_documents_pass_the_kernel_dry_run(doc: ruleset.RulesetDocument, nft_check: None) -> None:
    """Every rule form the generator reaches is accepted by the kernel, not only the golden ones."""
    netns.nft_dry_run(
        nftables.render(doc, config.RenderSettings(log_rate_per_second=3), CGROUPS, uids=UIDS).text
    )


@pytest.mark.netns
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents())
def test_random_documents_load_as_iptables(doc: ruleset.RulesetDocument, lab: netns.Lab) -> None:
    """The fallback of random documents loads into one lab namespace, document after document
    (connection behaviour is the lab tests' business). xt_cgroup resolves --path in this host's
    cgroup tree, so the process maps to the root cgroup here."""
    result = iptables.render(doc, config.RenderSettings(log_rate_per_second=3), {"nginx": "/"}, uids=UIDS)
    lab.run(lab.a, "ipset", "restore", text_in=result.ipset)
    for tool, text in (("iptables", result.v4_install), ("ip6tables", result.v6_install)):
        lab.run(lab.a, f"{tool}-restore", "--noflush", text_in=text)
        for builtin in ("INPUT", "OUTPUT"):  # the next document installs its jumps again
            lab.run(lab.a, tool, "-F", builtin)
