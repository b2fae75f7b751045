"""Addresses: parsing, and exclude/collapse checked against brute force on small ranges."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microseg.errors import ValidationError
from microseg.model import addresses
from tests.model import strategies as gen


def members(nets: list[addresses.Network]) -> set[tuple[int, int]]:
    """Every (version, address) the networks cover, enumerated one by one."""
    return {(n.version, int(a)) for n in nets for a in n}


def assert_minimal(nets: list[addresses.Network]) -> None:
    """Sorted, v4 before v6, no two networks overlap or could merge."""
    assert nets == sorted(nets, key=lambda n: (n.version, n))
    assert nets == list(addresses.collapse(nets))
    for a, b in itertools.pairwise(nets):
        assert a.version != b.version or not a.overlaps(b)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1", "10.0.0.1/32"),
        (" 10.0.0.0/24 ", "10.0.0.0/24"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
    ids=["v4-host", "v4-cidr-with-spaces", "v6-host", "v6-upper-case", "v4-everything"],
)
def test_network_parses(text: str, expected: str) -> None:
    assert str(addresses.network(text)) == expected


@pytest.mark.parametrize(
    "text",
    ["10.0.0.1/24", "10.0.0.256", "10.0.0.0/33", "2001:db8::1/64", "web-1", ""],
    ids=["host-bits-set", "octet-too-big", "prefix-too-long", "v6-host-bits-set", "a-name", "empty"],
)
def test_network_rejects(text: str) -> None:
    with pytest.raises(ValidationError, match="not an IP address or CIDR"):
        addresses.network(text)


def test_address_parses_and_rejects() -> None:
    assert addresses.address("10.0.0.1") == ipaddress.IPv4Address("10.0.0.1")
    assert addresses.address("::1") == ipaddress.IPv6Address("::1")
    with pytest.raises(ValidationError, match="not an IP address"):
        addresses.address("10.0.0.0/24")


@given(st.lists(gen.small_v4_networks(), max_size=6), st.lists(gen.small_v4_networks(), max_size=4))
def test_exclude_v4_equals_brute_force(
    cidrs: list[ipaddress.IPv4Network], excepts: list[ipaddress.IPv4Network]
) -> None:
    result = addresses.exclude(cidrs, excepts)
    assert members(result) == members(list(cidrs)) - members(list(excepts))
    assert_minimal(result)


@given(st.lists(gen.small_v6_networks(), max_size=6), st.lists(gen.small_v6_networks(), max_size=4))
def test_exclude_v6_equals_brute_force(
    cidrs: list[ipaddress.IPv6Network], excepts: list[ipaddress.IPv6Network]
) -> None:
    result = addresses.exclude(cidrs, excepts)
    assert members(result) == members(list(cidrs)) - members(list(excepts))
    assert_minimal(result)


@given(
    st.lists(gen.small_v4_networks(), max_size=4),
    st.lists(gen.small_v6_networks(), max_size=4),
    st.lists(gen.small_v4_networks(), max_size=3),
    st.lists(gen.small_v6_networks(), max_size=3),
)
def test_exclude_keeps_families_apart(
    v4: list[ipaddress.IPv4Network],
    v6: list[ipaddress.IPv6Network],
    cut4: list[ipaddress.IPv4Network],
    cut6: list[ipaddress.IPv6Network],
) -> None:
    mixed = addresses.exclude([*v6, *v4], [*cut6, *cut4])
    assert mixed == [*addresses.exclude(v4, cut4), *addresses.exclude(v6, cut6)]
    assert addresses.exclude(v4, cut6) == addresses.collapse(v4)
    assert addresses.exclude(v6, cut4) == addresses.collapse(v6)


@given(st.lists(gen.small_v4_networks() | gen.small_v6_networks(), max_size=8))
def test_collapse_equals_brute_force(nets: list[addresses.Network]) -> None:
    result = addresses.collapse(nets)
    assert members(result) == members(nets)
    assert_minimal(result)
    assert addresses.collapse(reversed(nets)) == result


def test_collapse_merges_adjacent_and_contained() -> None:
    nets = [
        addresses.network(n) for n in ("2001:db8::/64", "10.0.0.128/25", "10.0.0.0/25", "10.0.0.7", "::/0")
    ]
    assert [str(n) for n in addresses.collapse(nets)] == ["10.0.0.0/24", "::/0"]


def test_v4_mapped_v6_is_not_v4() -> None:
    mapped = addresses.network("::ffff:10.0.0.1")
    assert addresses.exclude([mapped], [addresses.network("10.0.0.1")]) == [mapped]
    assert not addresses.contains([addresses.network("10.0.0.0/8")], addresses.address("::ffff:10.0.0.1"))


@pytest.mark.parametrize(
    ("address", "expected"),
    [("10.0.0.5", True), ("10.0.1.5", False), ("2001:db8::9", True), ("2001:db9::", False)],
    ids=["v4-inside", "v4-outside", "v6-inside", "v6-outside"],
)
def test_contains(address: str, expected: bool) -> None:
    nets = [addresses.network("10.0.0.0/24"), addresses.network("2001:db8::/32")]
    assert addresses.contains(nets, addresses.address(address)) is expected


@given(st.lists(gen.any_networks() | gen.host_networks | gen.small_v4_networks(), max_size=12))
def test_collapse_equals_the_standard_librarys_over_the_whole_address_space(
    nets: list[addresses.Network],
) -> None:
    v4 = [n for n in nets if n.version == 4]
    v6 = [n for n in nets if n.version == 6]
    expected = [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]  # type: ignore[type-var]
    assert addresses.collapse(nets) == expected
