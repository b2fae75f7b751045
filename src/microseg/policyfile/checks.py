"""Checks across documents: what no single document can get wrong on its own.

Called by the loader once every document is built: duplicate names per kind, tier order ties,
duplicate rule names and priority ties inside a tier (across policies), and workloads whose
addresses overlap (an unmanaged CIDR containing another workload's address included). Each
problem is reported at the definition that came later, pointing at the earlier one.

What it deliberately does not do: resolve references (the builders do, with the names they get
from here), or decide anything about traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from microseg.model import addresses, rules, tiers, workloads
from microseg.policyfile import nodes
from microseg.policyfile.reader import Reader

NOUNS = {
    "Workload": "workload",
    "IPList": "IP list",
    "Service": "service",
    "Tier": "tier",
    "LabelRule": "label rule",
    "Policy": "policy",
    "Invariant": "invariant",
}


@dataclass
class Named:
    """A named object as defined in a document; `value` is None when it failed to build."""

    kind: str
    name: str
    value: Any
    reader: Reader
    seq: int
    """Definition order over every file (files in name order, documents in file order)."""

    @property
    def where(self) -> str:
        """`file:line` of its name."""
        return self.reader.where(("metadata", "name"))


def unique(items: list[Named]) -> dict[str, Named]:
    """The first definition of each name; every later one is reported as a duplicate."""
    first: dict[str, Named] = {}
    for item in items:
        seen = first.get(item.name)
        if seen is None:
            first[item.name] = item
            continue
        item.reader.error(
            ("metadata", "name"),
            f"duplicate {NOUNS[item.kind]} name {item.name} (first defined at {seen.where})",
        )
    return first


def tier_orders(all_tiers: dict[str, tiers.Tier], declared: dict[str, Named]) -> None:
    """Two tiers with one order: reported at the declared one (a built-in is never to blame)."""
    by_order: dict[int, list[str]] = {}
    for name, tier in all_tiers.items():
        by_order.setdefault(tier.order, []).append(name)
    for order, names in by_order.items():
        ranked = sorted(names, key=lambda n: declared[n].seq if n in declared else -1)
        for name in ranked[1:]:
            declared[name].reader.error(
                ("spec", "order"),
                f"tier order {order} is already used by tier {ranked[0]}; tier orders must be unique",
            )


@dataclass(frozen=True)
class RuleAt:
    """A rule as defined in a policy, with the name and priority it claims; `rule` is None when it
    failed to build (its clashes are still worth reporting)."""

    reader: Reader
    path: nodes.Path
    tier: str
    name: str
    priority: int
    rule: rules.Rule | None


def rule_clashes(found: list[RuleAt]) -> None:
    """Rule names and priorities must be unique in a tier, whichever policy holds the rule."""
    names: dict[tuple[str, str], RuleAt] = {}
    priorities: dict[tuple[str, int], RuleAt] = {}
    for item in found:
        first = names.setdefault((item.tier, item.name), item)
        if first is not item:
            item.reader.error(
                (*item.path, "name"),
                f"duplicate rule name {item.name} in tier {item.tier} "
                f"(first defined at {first.reader.where((*first.path, 'name'))})",
            )
            continue
        first = priorities.setdefault((item.tier, item.priority), item)
        if first is not item:
            item.reader.error(
                (*item.path, "priority"),
                f"priority {item.priority} is already used by rule {first.name} in tier {item.tier} "
                f"({first.reader.where((*first.path, 'priority'))}); priorities must be unique in a tier",
            )


def overlaps(items: list[Named]) -> None:
    """Every address belongs to at most one workload, so that every verdict is unambiguous.

    A sweep over addresses in order: an address range that starts before the furthest end seen
    so far overlaps the range that reached furthest. O(n log n), for estates of 100k workloads.
    """
    spans = sorted(
        (
            (net.version, int(net.network_address), -int(net.broadcast_address), net, item)
            for item in items
            if isinstance(item.value, workloads.Workload)
            for net in item.value.addresses
        ),
        key=lambda s: s[:3],
    )
    reach: tuple[int, int, addresses.Network, Named] | None = None  # (version, last, net, owner)
    reported: set[tuple[str, str]] = set()
    for version, first, neg_last, net, item in spans:
        if reach is not None and reach[0] == version and first <= reach[1] and reach[3] is not item:
            _overlap((net, item), (reach[2], reach[3]), reported)
        if reach is None or reach[0] != version or -neg_last > reach[1]:
            reach = (version, -neg_last, net, item)


At = tuple[addresses.Network, Named]


def _overlap(one: At, other: At, reported: set[tuple[str, str]]) -> None:
    later, earlier = (one, other) if one[1].seq > other[1].seq else (other, one)
    pair = (later[1].name, earlier[1].name)
    if pair in reported:
        return
    reported.add(pair)
    later[1].reader.error(
        ("spec", "addresses"),
        f"address {_show(later[0])} of workload {later[1].name} overlaps {_show(earlier[0])} of workload "
        f"{earlier[1].name} ({earlier[1].reader.where(('spec', 'addresses'))}); an address belongs to "
        "one workload only (use an IP list for ranges)",
    )


def _show(net: addresses.Network) -> str:
    return str(net.network_address) if net.num_addresses == 1 else str(net)
