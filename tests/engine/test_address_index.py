"""The address index answers exactly what scanning every peer's networks answers.

The networks are drawn from two 64-address spaces that share their integers (10.1.2.0/26 and
::a01:200/122), so an index that mixed IPv4 and IPv6 up would be caught; every address of both
spaces and their neighbours is asked, so every interval edge is.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from microseg.engine import address_index, rulebook
from microseg.model import addresses, estate, selectors, tiers
from tests.engine.estates import TCP, rule, svc

BASE = int(ipaddress.IPv4Address("10.1.2.0"))
"""First address of both spaces, as an integer."""
SIZE = 64


@st.composite
def small_networks(draw: st.DrawFn) -> addresses.Network:
    """A v4 or v6 network inside the 64 addresses from BASE."""
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    width = draw(st.integers(0, 6))
    start = BASE + draw(st.integers(0, SIZE // 2**width - 1)) * 2**width
    return ipaddress.ip_network((start, bits - width))


@st.composite
def cidr_peers(draw: st.DrawFn) -> tuple[addresses.Network, ...]:
    """A peer's networks: some CIDRs, with `except`s cut out of them as `CidrPeer` does."""
    cidrs = tuple(draw(st.lists(small_networks(), min_size=1, max_size=4)))
    inside = [n for n in draw(st.lists(small_networks(), max_size=3))
              if any(n.version == c.version and n.subnet_of(c) for c in cidrs)]  # type: ignore[arg-type]  # fmt: skip
    return tuple(selectors.CidrPeer(cidrs, tuple(inside)).networks)


def every_address() -> list[addresses.Address]:
    """Both spaces, one address either side of them, and the IPv4-mapped forms of the v4 space."""
    numbers = range(BASE - 1, BASE + SIZE + 1)
    return [
        *(ipaddress.IPv4Address(n) for n in numbers),
        *(ipaddress.IPv6Address(n) for n in numbers),
        *(ipaddress.IPv6Address(f"::ffff:{ipaddress.IPv4Address(n)}") for n in numbers),
    ]


def scanned(entries: list[tuple[str, tuple[addresses.Network, ...], int]],
            address: addresses.Address) -> tuple[int, frozenset[str]]:  # fmt: skip
    """The straightforward answer: test every entry's networks."""
    hits = [(peer, bit) for peer, nets, bit in entries if addresses.contains(nets, address)]
    mask = 0
    for _, bit in hits:
        mask |= bit
    return mask, frozenset(peer for peer, _ in hits)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdef"), cidr_peers(), st.integers(0, 7)), max_size=8))
def test_index_equals_scan(drawn: list[tuple[str, tuple[addresses.Network, ...], int]]) -> None:
    # a peer may appear in several rules (several bits), and several peers in one rule
    entries = [(peer, nets, 1 << bit) for peer, nets, bit in drawn]
    index = address_index.AddressIndex(entries)
    for address in every_address():
        assert index.match(address) == scanned(entries, address), address


def test_no_entries_match_nothing() -> None:
    index: address_index.AddressIndex[str] = address_index.AddressIndex([])
    assert index.match(ipaddress.IPv4Address("10.0.0.1")) == (0, frozenset())
    assert index.match(ipaddress.IPv6Address("::1")) == (0, frozenset())


def test_rulebook_match_keeps_except_and_versions_apart() -> None:
    carved = selectors.CidrPeer((addresses.network("10.0.0.0/24"),), (addresses.network("10.0.0.128/25"),))
    v6 = selectors.CidrPeer((addresses.network("::a00:0/120"),))  # the same integers as 10.0.0.0/24
    web = (svc("web", TCP, 80),)
    est = estate.Estate(
        rules=(rule("r", tiers.APPLICATION, 1, "allow", (carved, v6), (selectors.AnyPeer(),), web),)
    )
    book = rulebook.RuleBook(est)
    bit = next(br.bit for br in book.rules if br.rule.name == "r")
    carved_ref, v6_ref = next(br.sources for br in book.rules if br.rule.name == "r")
    assert book.address_match(addresses.address("10.0.0.5"), sources=True) == (bit, frozenset({carved_ref}))
    assert book.address_match(addresses.address("10.0.0.200"), sources=True) == (0, frozenset())
    assert book.address_match(addresses.address("::a00:c8"), sources=True) == (bit, frozenset({v6_ref}))
    assert book.address_match(addresses.address("10.0.0.5"), sources=False) == (0, frozenset())
