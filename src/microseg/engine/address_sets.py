"""Address sets: who is in each set, kept apart from which rules use the set.

Fed by the rule book (static sets for IP lists and CIDR peers; one set per selector) and by
workload changes (a workload joins or leaves a selector's set when its identity changes; its
addresses move when it is re-addressed); feeds ruleset documents (members) and the agent (deltas).

A workload that changes its addresses changes set members only: no rule is recomputed. Members are
counted (a multiset) so that removing one workload never removes an address another still holds.
What it deliberately does not do: decide which sets a ruleset references (the compiler does).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from microseg.model import addresses, ruleset


@dataclass
class SetDelta:
    """Members that appeared in or vanished from one set."""

    added: set[addresses.Network] = field(default_factory=set)
    removed: set[addresses.Network] = field(default_factory=set)


class AddressSets:
    """Static sets plus counted members of selector sets, with per-change deltas."""

    def __init__(self, static: dict[str, ruleset.AddressSet], selector_sets: dict[str, str]) -> None:
        self._static = dict(static)
        self._descriptions = dict(selector_sets)  # set name -> selector text
        self._members: dict[str, Counter[addresses.Network]] = {name: Counter() for name in selector_sets}
        self._cache: dict[str, ruleset.AddressSet] = {}
        self.pending: dict[str, SetDelta] = {}

    def add(self, set_name: str, nets: tuple[addresses.Network, ...]) -> None:
        """Count `nets` into a selector set."""
        counts = self._members[set_name]
        for net in nets:
            counts[net] += 1
            if counts[net] == 1:
                self._note(set_name, net, added=True)

    def remove(self, set_name: str, nets: tuple[addresses.Network, ...]) -> None:
        """Count `nets` out of a selector set."""
        counts = self._members[set_name]
        for net in nets:
            counts[net] -= 1
            if counts[net] == 0:
                del counts[net]
                self._note(set_name, net, added=False)

    def _note(self, set_name: str, net: addresses.Network, *, added: bool) -> None:
        self._cache.pop(set_name, None)
        delta = self.pending.setdefault(set_name, SetDelta())
        mine, other = (delta.added, delta.removed) if added else (delta.removed, delta.added)
        if net in other:
            other.discard(net)  # a remove and re-add within one change cancel out
        else:
            mine.add(net)

    def take_deltas(self) -> dict[str, SetDelta]:
        """The deltas since the last call, without empty ones."""
        out = {k: v for k, v in self.pending.items() if v.added or v.removed}
        self.pending = {}
        return out

    def selector_set_names(self) -> list[str]:
        """Names of every selector set, empty ones included."""
        return sorted(self._members)

    def members(self, set_name: str) -> frozenset[addresses.Network]:
        """Uncollapsed members of a selector set, or the networks of a static set."""
        if set_name in self._static:
            return frozenset(self._static[set_name].networks)
        return frozenset(self._members[set_name])

    def get(self, set_name: str) -> ruleset.AddressSet:
        """The set as documents carry it: collapsed networks and a description."""
        if set_name in self._static:
            return self._static[set_name]
        cached = self._cache.get(set_name)
        if cached is None:
            cached = self._cache[set_name] = _interned(
                set_name, self._descriptions[set_name], frozenset(self._members[set_name])
            )
        return cached


_INTERNED: dict[tuple[str, str, frozenset[addresses.Network]], ruleset.AddressSet] = {}
"""Sets by content, across engine builds: a provision rebuilds the engine, and its unchanged sets
are then the same objects (collapsed, digested and encoded once, and seen as unchanged by the
feed's deltas at a glance)."""


def _interned(name: str, description: str, members: frozenset[addresses.Network]) -> ruleset.AddressSet:
    key = (name, description, members)
    found = _INTERNED.get(key)
    if found is None:
        if len(_INTERNED) >= 8192:
            _INTERNED.clear()
        found = _INTERNED[key] = ruleset.AddressSet(name, tuple(addresses.collapse(members)), description)
    return found
