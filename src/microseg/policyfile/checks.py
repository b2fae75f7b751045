"""Checks across documents: what no single document can get wrong on its own.

Called by the loader once every document is built: duplicate names per kind, tier order ties, tiers
ordered before `quarantine`,
duplicate rule names and ambiguous priority ties inside a tier (across policies: two rules with one
priority, different actions and a flow both can match), and workloads whose
addresses overlap (an unmanaged CIDR containing another workload's address included). Each
problem is reported at the definition that came later, pointing at the earlier one.

What it deliberately does not do: resolve references (the builders do, with the names they get
from here), or decide anything about traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from microseg.model import addresses, overlap, rules, tiers, workloads
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


def quarantine_first(all_tiers: dict[str, tiers.Tier], declared: dict[str, Named]) -> None:
    """Every tier comes after `quarantine`: a tier tried before it could allow what a quarantine
    isolates. Reported at the declared tier ordered before it, or at a declared `quarantine`
    ordered after a built-in tier (a built-in is never to blame)."""
    first = all_tiers.get(tiers.QUARANTINE)
    if first is None:
        return
    for name, tier in all_tiers.items():
        if name == tiers.QUARANTINE or tier.order >= first.order:
            continue
        blamed = name if name in declared else tiers.QUARANTINE
        if blamed not in declared:
            continue
        declared[blamed].reader.error(
            ("spec", "order"),
            f"tier {name} (order {tier.order}) comes before tier quarantine (order {first.order}): "
            f"quarantine is always evaluated first; give tier {blamed} another order",
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


def rule_clashes(found: list[RuleAt], ip_lists: overlap.IpLists) -> None:
    """Rule names are unique in a tier, whichever policy holds the rule. Priorities may repeat,
    except where the order of two rules could change an outcome: both can match one flow
    (`model.overlap`) and they act differently. Such a pair is reported at both rules, each naming
    the other: neither is more to blame, and each may be the one its reader can change (a file
    beside a draft on the server)."""
    names: dict[tuple[str, str], RuleAt] = {}
    priorities: dict[tuple[str, int], list[RuleAt]] = {}
    for item in found:
        first = names.setdefault((item.tier, item.name), item)
        if first is not item:
            item.reader.error(
                (*item.path, "name"),
                f"duplicate rule name {item.name} in tier {item.tier} "
                f"(first defined at {first.reader.where((*first.path, 'name'))})",
            )
            continue
        same = priorities.setdefault((item.tier, item.priority), [])
        for earlier in same:
            if _ambiguous(earlier, item, ip_lists):
                _report_ambiguity(item, earlier)
                _report_ambiguity(earlier, item)
        same.append(item)


def _ambiguous(one: RuleAt, other: RuleAt, ip_lists: overlap.IpLists) -> bool:
    """Whether the name order of two rules at one priority can decide a flow; a rule that failed
    to build has its problems reported already and is not compared."""
    if one.rule is None or other.rule is None or one.rule.action is other.rule.action:
        return False
    return overlap.rules_overlap(one.rule, other.rule, ip_lists)


def _report_ambiguity(at: RuleAt, other: RuleAt) -> None:
    """The problem at `at`, naming `other` (with its file:line when it has one: API data has none)."""
    assert at.rule is not None and other.rule is not None  # _ambiguous compared them
    line = other.reader.doc.line((*other.reader.prefix, *other.path, "priority"))
    where = f", {other.reader.where((*other.path, 'priority'))}" if line else ""
    at.reader.error(
        (*at.path, "priority"),
        f"rule {at.name} ({at.rule.action.value}) and rule {other.name} ({other.rule.action.value}"
        f"{where}) both have priority {at.priority} in tier {at.tier} and can match the same flow, "
        "so their names would decide it: give one of them another priority (equal priorities are fine "
        "for rules with one action, or that no flow matches both)",
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
