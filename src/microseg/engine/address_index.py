"""Address index: which address peers of one rule side contain an address, found by bisection.

Fed by the rule book (the IP-list and CIDR peers of one rule side, each with its rule's bit);
feeds `RuleBook.address_match`, which the evaluator asks once per distinct address it meets.
Testing every peer's networks with `ipaddress` containment cost ~136 peers x 3,431 addresses of a
cold engine's first map; here the networks are cut into disjoint integer intervals once, each
with the OR of the bits and the set of peers covering it, and a lookup is one `bisect`.

What it deliberately does not do: cut `except`s (peers arrive with their networks already cut,
`CidrPeer.networks`) or cache per address (the evaluator does). IPv4 and IPv6 are indexed
separately, as `ipaddress` keeps them: an IPv6 address (even an IPv4-mapped one) is never inside
an IPv4 network.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable, Sequence
from typing import Generic, TypeVar

from microseg.model import addresses

P = TypeVar("P", bound=Hashable)
Entry = tuple[P, Sequence[addresses.Network], int]
"""A peer, its networks and the bit of the rule it belongs to."""


class _Intervals(Generic[P]):
    """Disjoint integer intervals of one IP version: interval i is [starts[i], starts[i + 1]) and
    covered by `matches[i]` (the last start closes the last interval).

    Peers are handled by number while the intervals are cut: a peer's hash covers all its
    networks (an IP list of 5,000 addresses hashes 5,000 networks), and hashing it once per
    interval it covers made building the index quadratic in the list's size."""

    def __init__(self, ranges: list[tuple[int, int, int, int]], peers: Sequence[P]) -> None:
        self.starts = sorted({lo for lo, _, _, _ in ranges} | {hi + 1 for _, hi, _, _ in ranges})
        bits = [0] * len(self.starts)
        covering: list[set[int]] = [set() for _ in self.starts]
        for lo, hi, peer, bit in ranges:
            for i in range(bisect.bisect_left(self.starts, lo), bisect.bisect_left(self.starts, hi + 1)):
                bits[i] |= bit
                covering[i].add(peer)
        self.matches = _interned(zip(bits, covering, strict=True), peers)

    def match(self, number: int) -> tuple[int, frozenset[P]] | None:
        """What covers the address `number`; None when no interval does."""
        i = bisect.bisect_right(self.starts, number) - 1
        return self.matches[i] if 0 <= i < len(self.matches) - 1 else None


def _interned(found: Iterable[tuple[int, set[int]]], peers: Sequence[P]) -> list[tuple[int, frozenset[P]]]:
    """The matches as tuples of peers, equal ones shared (neighbouring intervals often have the
    same peers): each distinct set of peer numbers becomes a set of peers once."""
    seen: dict[tuple[int, frozenset[int]], tuple[int, frozenset[P]]] = {}
    out = []
    for bits, numbers in found:
        key = (bits, frozenset(numbers))
        match = seen.get(key)
        if match is None:
            match = seen[key] = (bits, frozenset(peers[n] for n in numbers))
        out.append(match)
    return out


class AddressIndex(Generic[P]):
    """Address -> (OR of the bits, set of peers) of the entries whose networks contain it;
    exactly what testing each entry with `addresses.contains` gives."""

    def __init__(self, entries: Iterable[Entry[P]]) -> None:
        ranges: dict[int, list[tuple[int, int, int, int]]] = {4: [], 6: []}
        peers: list[P] = []
        for peer, networks, bit in entries:
            number = len(peers)
            peers.append(peer)
            for net in networks:
                low, high = int(net.network_address), int(net.broadcast_address)
                ranges[net.version].append((low, high, number, bit))
        self._by_version = {version: _Intervals(found, peers) for version, found in ranges.items()}
        self._nothing: tuple[int, frozenset[P]] = (0, frozenset())

    def match(self, address: addresses.Address) -> tuple[int, frozenset[P]]:
        """The bits and peers of every entry with a network containing `address`."""
        found = self._by_version[address.version].match(int(address))
        return self._nothing if found is None else found
